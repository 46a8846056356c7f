"""The Ray tests: one local Ray cluster for the whole session, and only inside a network namespace whose
sole interface is loopback, so that no test can send a packet to, or listen on, anything but 127.0.0.1.

Run them through the launcher (``make pytest`` does)::

    python tests/on_ray/loopback.py python -m pytest -q tests/on_ray

The main suite does not collect this directory (``collect_ignore`` in ``tests/conftest.py``). Outside
such a namespace the session stops before any test runs, with the reason; it does not skip, because a
quietly skipped Ray part looks the same as a passing one. The ``anyio_backend`` fixture of
``tests/conftest.py`` applies here too: async tests run on asyncio and on trio.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RAY_TESTS = Path(__file__).resolve().parent
REPOSITORY = RAY_TESTS.parent.parent
#: The main suite's folder: the Ray tests run some of its pipelines (``from test_exactly_once import
#: ...``), here and in the workers.
MAIN_TESTS = RAY_TESTS.parent
sys.path.insert(0, str(MAIN_TESTS))

#: Logical CPUs of the test cluster. Logical only: Ray never pins or measures them. Four lets four
#: actors that each ask for ``num_cpus=1`` (a job of parallelism 4) be placed at once; actors that ask
#: for nothing hold no CPU once placed. It costs no extra processes: Ray still prestarts two workers.
CPUS = 4


def outside_loopback_namespace() -> str | None:
    """Why this process must not start Ray, or None if its network namespace has only ``lo``.

    ``socket.if_nameindex`` asks the kernel about this process's own namespace; ``/sys/class/net``
    would not do, since it still lists the host's interfaces after ``unshare --net``."""
    names = sorted(name for _, name in socket.if_nameindex())
    if names == ["lo"]:
        return None
    return (
        f"the Ray tests run only in a network namespace with loopback alone, and this one has {names}.\n"
        "Start them through the launcher, which makes one:\n"
        "    python tests/on_ray/loopback.py python -m pytest tests/on_ray\n"
        "(or `make pytest`). They are not skipped, so that a run without them never looks like a pass."
    )


def pytest_configure(config: pytest.Config) -> None:
    problem = outside_loopback_namespace()
    if problem is not None:
        raise pytest.UsageError(problem)


# As the launcher does (see there), for a run under a bare `unshare --net`; it must come before the
# first `import ray`, which reads it, and this file is imported before the test modules.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def worker_python_path() -> str:
    """PYTHONPATH for Ray's worker processes.

    Actors and tasks defined in test modules are pickled by reference (module and name), so a worker
    must import the same modules the driver imported. Ray adds only the driver's working directory to
    workers' ``sys.path``; pytest imports ``tests/on_ray/test_*.py`` as top-level modules from
    ``tests/on_ray``, and the driver's ``lockgate`` is this checkout (pytest's ``pythonpath = ["."]``),
    whereas a worker left alone would import the installed one, which may be another checkout."""
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(filter(None, [str(REPOSITORY), str(RAY_TESTS), str(MAIN_TESTS), inherited]))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray cluster on 127.0.0.1 for the session: started on first use, shut down at the end.
    Yields ``ray.init``'s context (``.address_info`` has the addresses)."""
    problem = outside_loopback_namespace()  # again, in case this file's check was bypassed
    assert problem is None, problem
    import ray  # here, not at the top: the namespace check above must come first

    # No _node_ip_address="127.0.0.1": ray.init replaces a loopback address there with the one Ray
    # finds itself. The launcher's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes that 127.0.0.1.
    context = ray.init(
        num_cpus=CPUS,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": worker_python_path()}},
    )
    try:
        assert context.address_info["node_ip_address"] == "127.0.0.1", context.address_info
        yield context
    finally:
        ray.shutdown()
