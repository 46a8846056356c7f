# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The notebook test starts a Jupyter kernel by name; it must find this venv's Python first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint typecheck pytest pytest-main pytest-ray bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/wordcount.py
	$(BIN)/python examples/crash_and_recover.py

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check lockgate tests examples benchmarks
	$(BIN)/ruff format --check lockgate tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict lockgate

pytest: pytest-main pytest-ray

# A bare `pytest` collects the main suite only (tests/conftest.py ignores tests/on_ray).
pytest-main: $(STAMP)
	$(BIN)/python -m pytest -q

# The Ray tests, in a network namespace with only loopback (tests/on_ray/loopback.py). Where none can be
# made the launcher says why and exits 77, and this fails: a skip would hide that CI lost them.
pytest-ray: $(STAMP)
	$(BIN)/python tests/on_ray/loopback.py $(BIN)/python -m pytest -q tests/on_ray

bench: $(STAMP)
	$(BIN)/python benchmarks/keyed_sum.py --variant a
	$(BIN)/python benchmarks/keyed_sum.py --variant b
	$(BIN)/python benchmarks/keyed_sum.py --variant a --backend rocksdb
	$(BIN)/python benchmarks/keyed_sum.py --variant b --backend rocksdb
	$(BIN)/python benchmarks/stateless.py
	$(BIN)/python benchmarks/checkpointing.py
	$(BIN)/python benchmarks/checkpointing.py --backend rocksdb
	$(BIN)/python benchmarks/rescale.py
	$(BIN)/python benchmarks/rescale.py --backend rocksdb
	$(BIN)/python benchmarks/large_state.py
	$(BIN)/python benchmarks/large_state.py --backend rocksdb
	$(BIN)/python benchmarks/backpressure.py
	$(BIN)/python benchmarks/backpressure.py --storage memory
	$(BIN)/python benchmarks/state_kinds.py
	$(BIN)/python benchmarks/serializers.py
	$(BIN)/python benchmarks/serializers.py --backend rocksdb
	$(BIN)/python benchmarks/savepoint_read.py
	$(BIN)/python benchmarks/queries.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/compare.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/large_keyspace.py

clean:
	rm -rf $(VENV) build *.egg-info
