"""``examples/on_ray.py`` runs as a user runs it (starting its own local Ray) and prints the totals of
the in-process word count."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "on_ray.py"


def test_the_ray_example_counts_what_the_local_word_count_counts() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Counted 6200 words in 600 lines on Ray in ")
    rows = dict(re.findall(r"^  (\S+) +(\d+)$", done.stdout, flags=re.MULTILINE))
    # The local example's counts (tests/test_examples.py), two hundred times over.
    assert rows == {"a": "800", "stream": "600", "table": "600", "the": "600", "has": "400"}
