"""Count the words of a few lines of text: the "hello world" of dataflow, as a plain script.

    python examples/wordcount.py      (or: make demo)

The pipeline splits each line into words, pairs every word with a 1, partitions the pairs by word
(``key_by``) and keeps a running sum per word. The running sum emits a new count for every word it
sees, so the last count of each word is its total.
"""

import re

import lockgate as lg

LINES = [
    "A stream is a table that has not finished arriving.",
    "A table is a stream that has stopped, for now.",
    "Count the words of the stream and the table counts itself.",
]


def words(line: str) -> list[str]:
    """The words of a line, lower-cased, without punctuation."""
    return re.findall(r"[a-z']+", line.lower())


def main() -> None:
    env = lg.StreamEnvironment(parallelism=2)  # operators after the source run as 2 subtasks each
    counts = (
        env.from_collection(LINES, uid="lines")
        .flat_map(words, uid="split")
        .map(lambda word: (word, 1), uid="pair")
        .key_by(lambda pair: pair[0])
        .sum(1, uid="count")
        .sink(lg.CollectSink(), uid="collect")
    )
    result = env.execute_blocking("wordcount")

    totals = dict(counts.results)  # later counts of a word replace earlier ones: the last is the total
    print(
        f"Counted {sum(totals.values())} words ({len(totals)} different) "
        f"in {len(LINES)} lines in {result.duration * 1000:.1f} ms:\n"
    )
    width = max(map(len, totals))
    for word, count in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {word:<{width}}  {count:>2}")


if __name__ == "__main__":
    main()
