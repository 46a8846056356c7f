"""Every benchmark script starts: an import a refactoring broke fails here, not in ``make bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(
    path for path in BENCHMARKS.rglob("*.py") if 'if __name__ == "__main__":' in path.read_text()
)


def test_the_scripts_are_found() -> None:
    assert {"keyed_sum.py", "serializers.py", "rescale.py", "large_state.py", "bench.py"} <= {
        path.name for path in SCRIPTS
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(BENCHMARKS)))
def test_a_benchmark_script_imports_and_shows_its_usage(script: Path) -> None:
    module = ".".join(script.relative_to(BENCHMARKS.parent).with_suffix("").parts)
    # A script in a package runs as a module (its relative imports need the package).
    command = [sys.executable, "-m", module] if script.parent != BENCHMARKS else [sys.executable, str(script)]
    done = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, check=False, cwd=BENCHMARKS.parent
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
