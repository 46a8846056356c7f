"""Ray on loopback only: with the session's cluster up and two actors calling each other, every inet
socket in the test's network namespace (Ray's gcs_server, raylet, agents and workers, and this test
process, the driver) is on 127.0.0.1, local and remote address alike; a listener on a wildcard address
counts as not loopback. The sockets are read with psutil, which also names their processes, so the test
can show that the listing did include the cluster and is not vacuously clean.

The check itself is shown to catch what it is for: fed listings with a wildcard listener, a connection
to an outside address and the IPv6 wildcard, it reports exactly those. A function defined in this module
runs inside an actor, and workers import the same ``lockgate`` as the tests; both need the workers'
import path set up by ``tests/on_ray/conftest.py``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
import ray

pytestmark = pytest.mark.usefixtures("ray_session")


@dataclass(frozen=True)
class InetSocket:
    """One TCP or UDP socket: its process (name and pid) and its addresses; ``remote`` is None for a
    listener or an unconnected UDP socket."""

    process: str
    local: tuple[str, int]
    remote: tuple[str, int] | None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 and ::1, and their IPv4-mapped form ``::ffff:127.x.x.x`` (Python 3.11's
    ``is_loopback`` says False to that one). Wildcards (0.0.0.0, ::) are not loopback."""
    address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone, as in fe80::1%eth0
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def not_on_loopback(sockets: Iterable[InetSocket]) -> list[InetSocket]:
    """The sockets whose local or remote address is anything but loopback."""
    return [
        entry
        for entry in sockets
        if not is_loopback(entry.local[0]) or (entry.remote is not None and not is_loopback(entry.remote[0]))
    ]


def process_name(pid: int | None) -> str:
    if pid is None:
        return "?"
    try:
        return f"{psutil.Process(pid).name()}[{pid}]"
    except psutil.Error:
        return f"?[{pid}]"  # it exited between the listing and this look-up


def inet_sockets() -> list[InetSocket]:
    """Every TCP and UDP socket of this network namespace, IPv4 and IPv6. The namespace is the
    launcher's fresh one, so these are Ray's and this process's sockets and nothing else's."""
    return [
        InetSocket(
            process_name(connection.pid),
            (connection.laddr.ip, connection.laddr.port),
            (connection.raddr.ip, connection.raddr.port) if connection.raddr else None,
        )
        for connection in psutil.net_connections(kind="inet")
    ]


@ray.remote
class Echo:
    """An actor that reports its pid and calls a peer, so that worker-to-worker sockets exist too."""

    def pid(self) -> int:
        return os.getpid()

    def call(self, peer: Any) -> int:
        return int(ray.get(peer.pid.remote()))

    def apply(self, function: Any, value: int) -> int:
        return int(function(value))

    def lockgate_file(self) -> str:
        import lockgate

        return str(lockgate.__file__)


def triple(value: int) -> int:
    """Defined here, so a worker can only unpickle it by importing this module."""
    return 3 * value


def test_every_socket_of_ray_and_the_driver_is_on_loopback() -> None:
    first, second = Echo.remote(), Echo.remote()
    actor_pids = ray.get([first.pid.remote(), second.pid.remote()])
    assert ray.get(first.call.remote(second)) == actor_pids[1]
    assert ray.get(second.call.remote(first)) == actor_pids[0]

    sockets = inet_sockets()
    owners = " ".join(entry.process for entry in sockets)
    # Not vacuous: the listing holds the cluster's processes, the actors and this driver.
    for expected in ("gcs_server", "raylet", *(f"[{pid}]" for pid in (*actor_pids, os.getpid()))):
        assert expected in owners, f"no socket of {expected} among {len(sockets)}: {owners}"
    offenders = not_on_loopback(sockets)
    assert not offenders, "not on loopback:\n" + "\n".join(map(str, offenders))


def test_the_check_catches_sockets_off_loopback() -> None:
    """Planted bugs: listings as the host's namespace gives them, where Ray listens on every interface
    and an agent talks to the machine's own address."""
    clean = [
        InetSocket("gcs_server[10]", ("127.0.0.1", 6379), None),
        InetSocket("raylet[11]", ("::ffff:127.0.0.1", 40001), ("::ffff:127.0.0.1", 6379)),
        InetSocket("python[12]", ("::1", 40002), ("127.0.0.5", 40001)),
    ]
    wildcard_v4 = InetSocket("raylet[11]", ("0.0.0.0", 40003), None)
    wildcard_v6 = InetSocket("ray::Echo[13]", ("::", 40004), None)
    outside = InetSocket("agent[14]", ("127.0.0.1", 40005), ("10.1.2.3", 52365))
    outside_local = InetSocket("agent[14]", ("::ffff:10.1.2.3", 52365), None)

    assert not_on_loopback(clean) == []
    assert not_on_loopback([*clean, wildcard_v4, wildcard_v6, outside, outside_local]) == [
        wildcard_v4,
        wildcard_v6,
        outside,
        outside_local,
    ]


def test_a_function_of_a_test_module_runs_in_an_actor() -> None:
    assert ray.get(Echo.remote().apply.remote(triple, 14)) == 42


def test_workers_import_the_lockgate_the_tests_import() -> None:
    """Not another installed checkout: the editable install may point elsewhere than this one."""
    import lockgate

    assert ray.get(Echo.remote().lockgate_file.remote()) == lockgate.__file__
