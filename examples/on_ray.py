"""The word count of ``wordcount.py``, its subtasks in Ray actors: other processes of this machine
(and, given a cluster's address, other machines), the checkpoint coordinator here in the driver.

    pip install 'lockgate[ray]'
    python examples/on_ray.py                 # starts a local Ray, on 127.0.0.1, for this run
    python examples/on_ray.py --address auto  # joins the Ray cluster this machine belongs to

The job is the same as in-process; only the environment's runner differs. Functions defined here (in
``__main__``) travel to the workers by value; functions of your own modules must be importable on every
worker (installed there, or given in Ray's ``runtime_env``). Checkpoints go to a directory every worker
can reach: on one machine, a temporary directory; on a cluster, a shared file system or object storage
(``s3://...``, ``pip install 'lockgate[s3]'``).
"""

import argparse
import re
import tempfile
from pathlib import Path

import lockgate as lg

LINES = [
    "A stream is a table that has not finished arriving.",
    "A table is a stream that has stopped, for now.",
    "Count the words of the stream and the table counts itself.",
] * 200


def words(line: str) -> list[str]:
    """The words of a line, lower-cased, without punctuation."""
    return re.findall(r"[a-z']+", line.lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="a Ray cluster's address (default: a local Ray)")
    args = parser.parse_args()
    runner = lg.RayRunner(address=args.address)
    env = lg.StreamEnvironment(parallelism=2, runner=runner)
    with tempfile.TemporaryDirectory() as checkpoints:
        env.set_checkpoint_storage(Path(checkpoints).as_uri())
        env.enable_checkpointing(0.5)  # the sink's counts become visible with each checkpoint
        counts = (
            env.from_collection(LINES, uid="lines")
            .flat_map(words, uid="split")
            .map(lambda word: (word, 1), uid="pair")
            .key_by(lambda pair: pair[0])
            .sum(1, uid="count")
            .sink(lg.CollectSink(), uid="collect")  # its results come back here, exactly once
        )
        result = env.execute_blocking("wordcount on ray")

    totals = dict(counts.results)  # later counts of a word replace earlier ones: the last is the total
    print(f"Counted {sum(totals.values())} words in {len(LINES)} lines on Ray in {result.duration:.2f} s:")
    for word, count in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:5]:
        print(f"  {word:<8} {count:>4}")


if __name__ == "__main__":
    main()
