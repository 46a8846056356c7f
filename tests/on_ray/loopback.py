"""Run a command inside a fresh network namespace that has only the loopback interface, so nothing it
starts (Ray's gcs_server, raylet, agents, workers) can reach or listen on any address but 127.0.0.1.

    python tests/on_ray/loopback.py [--] COMMAND [ARG ...]

As root the namespace comes from ``unshare --net``; otherwise (or if that is refused) from a user
namespace, ``unshare --user --map-root-user --net``. Inside, this script brings ``lo`` up, checks that
``lo`` is the only interface, sets ``RAY_AUTH_MODE=disabled`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(Ray's node address is then 127.0.0.1) unless the caller set them, and replaces itself with the command,
so the exit status is the command's.

If no namespace can be made, it says why on stderr and exits with ``NO_NAMESPACE`` (77), a status
the command's own failures are unlikely to share, so a caller can tell "could not isolate" apart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys

NO_NAMESPACE = 77

#: Marks the second stage: this script re-run by ``unshare`` inside the new namespace.
INSIDE = "--inside-loopback-namespace"

# From <linux/sockios.h> and <net/if.h>; struct ifreq is 40 bytes on 64-bit Linux (16 for the name).
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ_SIZE = 40


def interface_names() -> list[str]:
    """The interfaces of this process's network namespace. (``/sys/class/net`` is no help here: it
    shows the namespace of whoever mounted sysfs, so after ``unshare --net`` it still lists eth0.)"""
    return sorted(name for _, name in socket.if_nameindex())


def bring_loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: set IFF_UP on ``lo`` through ioctl."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as handle:
        request = struct.pack("16sH", b"lo", 0).ljust(IFREQ_SIZE, b"\0")
        (flags,) = struct.unpack_from("H", fcntl.ioctl(handle, SIOCGIFFLAGS, request), 16)
        fcntl.ioctl(handle, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP).ljust(IFREQ_SIZE, b"\0"))


def unshare_commands() -> list[list[str]]:
    """The ways to get a new network namespace, most direct first. A root without CAP_SYS_ADMIN (some
    containers) may still be allowed a user namespace, so root tries both."""
    with_user_namespace = ["unshare", "--user", "--map-root-user", "--net"]
    return [["unshare", "--net"], with_user_namespace] if os.geteuid() == 0 else [with_user_namespace]


def run_inside(command: list[str]) -> None:
    """Second stage, already in the new namespace: make it usable, check it, become the command."""
    bring_loopback_up()
    names = interface_names()
    if names != ["lo"]:
        sys.exit(f"loopback.py: the new network namespace has {names}, expected only ['lo']")
    # Ray's token auth guards a cluster from other users of the same network. Here nobody else can
    # reach it, and leaving it on writes ~/.ray/auth_token and logs a warning in every run.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Otherwise Ray takes the node's address from the hostname when it finds no route out, and where
    # /etc/hosts maps the hostname to a real address (as Docker does), that address is not in this
    # namespace and ray.init waits forever for its GCS. Off, Ray uses 127.0.0.1 (its macOS default).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.exit(f"loopback.py: cannot run {command[0]!r}: {error}")


def run_outside(command: list[str]) -> int:
    """First stage: find an ``unshare`` the kernel allows, then re-run this script under it."""
    if shutil.which("unshare") is None:
        print("loopback.py: `unshare` (util-linux) is not installed", file=sys.stderr)
        return NO_NAMESPACE
    refusals: list[str] = []
    for unshare in unshare_commands():
        # A trial run first, so that a refused unshare (status 1) is never mistaken for the command
        # failing with status 1.
        trial = subprocess.run([*unshare, "true"], capture_output=True, text=True)
        if trial.returncode == 0:
            stage_two = [*unshare, sys.executable, os.path.abspath(__file__), INSIDE, *command]
            status = subprocess.run(stage_two).returncode
            return 128 - status if status < 0 else status  # killed by signal N: 128+N, as a shell says
        refusals.append(f"  {' '.join(unshare)}: {trial.stderr.strip() or f'status {trial.returncode}'}")
    print(
        "loopback.py: cannot create a network namespace with only loopback, so the command was not run.\n"
        + "\n".join(refusals)
        + "\nRun as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1"
        " or user.max_user_namespaces > 0; in a container, allow the unshare system call).",
        file=sys.stderr,
    )
    return NO_NAMESPACE


def main(arguments: list[str]) -> int:
    if arguments[:1] == [INSIDE]:
        run_inside(arguments[1:])
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    return run_outside(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
