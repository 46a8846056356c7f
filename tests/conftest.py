"""Shared fixtures: the whole suite runs on asyncio and on trio. The Ray tests are not collected."""

from __future__ import annotations

import pytest

# The Ray tests need a loopback-only network namespace and run on their own, through
# tests/on_ray/loopback.py (see tests/on_ray/conftest.py). Ignored here rather than with --ignore in the
# Makefile, so a bare `pytest` from the repository root runs the main suite as `make` does; an explicit
# `pytest tests/on_ray` still collects them.
collect_ignore = ["on_ray"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs once per event loop."""
    return str(request.param)
