"""The Ray runner's parts that need no Ray: channels between actors over a transport that reorders and
repeats, frames, the storage the workers reach through the driver, and what the runner takes.

The jobs themselves run on Ray in ``tests/on_ray`` (a network namespace with loopback alone).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import deque
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.mailbox import END_OF_INPUT, Barrier, Mailbox, Watermark
from lockgate.ray_runner._channels import (
    INLINE_BYTES,
    FrameError,
    RemoteInputChannel,
    RemoteOutputChannel,
    decode_frame,
    encode_frame,
)
from lockgate.ray_runner._storage import DriverStorage, reachable_from_workers

pytestmark = pytest.mark.anyio


class Transport:
    """Carries frames and grants between the two ends as a Ray cluster may: in any order (drawn from
    ``rng``), some of them twice."""

    def __init__(self, rng: random.Random, repeat: float) -> None:
        self.rng = rng
        self.repeat = repeat
        self.in_flight: list[tuple[str, Any]] = []
        self.receiver: RemoteInputChannel | None = None
        self.sender: RemoteOutputChannel | None = None

    def push(self, number: int, messages: list[Any], priority: bool) -> int:
        data = encode_frame((list(messages), {}), "test")
        self.in_flight.append(("frame", (number, data, priority)))
        if self.rng.random() < self.repeat:
            self.in_flight.append(("frame", (number, data, priority)))
        return len(data)

    def grant(self, up_to: int) -> None:
        self.in_flight.append(("grant", up_to))
        if self.rng.random() < self.repeat:
            self.in_flight.append(("grant", up_to))

    def deliver_one(self) -> bool:
        if not self.in_flight:
            return False
        kind, payload = self.in_flight.pop(self.rng.randrange(len(self.in_flight)))
        if kind == "grant":
            assert self.sender is not None
            self.sender.grant(payload)
        else:
            assert self.receiver is not None
            number, data, priority = payload
            for ready in self.receiver.receiver.accept(number, data, beyond_room=priority):
                messages, _ = decode_frame(ready, "test")
                self.receiver.deliver(messages)
        return True


messages = st.lists(
    st.one_of(
        st.lists(st.integers(), min_size=1, max_size=6),
        st.integers(0, 1000).map(Watermark),
    ),
    max_size=40,
)


async def carry_through(
    sent: list[Any],
    capacity: int,
    frame_records: int,
    seed: int,
    repeat: float,
    receiving: type[RemoteInputChannel] = RemoteInputChannel,
) -> list[Any]:
    """Send ``sent`` and the end of input through the two ends of a channel over a :class:`Transport`;
    what the consumer's mailbox received. Asserts all along that no more frames are held than granted."""
    transport = Transport(random.Random(seed), repeat)
    sender = RemoteOutputChannel("a[0]->b[0]", capacity, frame_records, transport.push)
    receiver = receiving(capacity, "a[0]->b[0]", transport.grant)
    transport.sender, transport.receiver = sender, receiver
    mailbox = Mailbox([receiver])
    received: list[Any] = []

    async def produce() -> None:
        for message in [*sent, END_OF_INPUT]:
            await sender.send(message)

    async def consume() -> None:
        while True:
            _, message = await mailbox.receive()
            received.append(message)
            if message is END_OF_INPUT:
                return

    async def carry() -> None:
        while True:
            transport.deliver_one()
            assert len(receiver._frames) + len(receiver.receiver.pending) <= capacity
            await anyio.lowlevel.checkpoint()  # the others' turn

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(carry)
            group.start_soon(produce)
            await consume()
            group.cancel_scope.cancel()
    return received


@settings(max_examples=60, deadline=None)
@given(
    sent=messages,
    capacity=st.integers(2, 5),
    frame_records=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    repeat=st.sampled_from([0.0, 0.3]),
)
async def test_messages_arrive_in_order_once_and_within_the_granted_room(
    sent: list[Any], capacity: int, frame_records: int, seed: int, repeat: float
) -> None:
    received = await carry_through(sent, capacity, frame_records, seed, repeat)
    assert received == [*sent, END_OF_INPUT]


class GrantsOnArrival(RemoteInputChannel):
    """A planted bug: room granted as frames arrive, not as the mailbox takes them."""

    def deliver(self, messages: list[Any]) -> None:
        super().deliver(messages)
        self._frame_taken()


async def test_the_channel_test_catches_a_consumer_that_grants_too_early() -> None:
    sent: list[Any] = [[n] for n in range(30)]
    with pytest.raises(ExceptionGroup) as caught:
        for seed in range(20):
            await carry_through(sent, 2, 1, seed, 0.0, GrantsOnArrival)
    # Frames held beyond the room, or counted wrong by the receiving end.
    assert caught.value.subgroup((ValueError, AssertionError)) is not None


async def test_an_unaligned_barrier_goes_beyond_the_room_and_overtakes_what_is_queued() -> None:
    pushed: deque[tuple[int, list[Any], bool]] = deque()

    def push(number: int, messages: list[Any], priority: bool) -> int:
        pushed.append((number, list(messages), priority))
        return 1

    sender = RemoteOutputChannel("a[0]->b[0]", 2, 1, push)
    receiver = RemoteInputChannel(2, "a[0]->b[0]", lambda up_to: None)
    Mailbox([receiver])
    await sender.send([1])
    await sender.send([2])  # two frames: the room granted is used up
    assert not sender._sender.has_room
    sender._buffer.append([3])  # a batch gathered, not sent yet (the producer waits for room)
    sender.overtake(7)  # goes at once all the same
    assert [(n, p) for n, _, p in pushed] == [(0, False), (1, False), (2, True)]
    for number, batch, priority in pushed:
        data = encode_frame((batch, {}), "test")
        for ready in receiver.receiver.accept(number, data, beyond_room=priority):
            receiver.deliver(decode_frame(ready, "test")[0])
    # The barrier is ahead of everything queued; it counts the batches it overtook, [3] included.
    assert list(receiver._queue) == [Barrier(7, 3), [1], [2], [3]]


async def test_frames_shrink_to_fit_in_a_call_and_grow_back() -> None:
    sizes: list[int] = []

    def push(number: int, messages: list[Any], priority: bool) -> int:
        size = len(encode_frame((messages, {}), "test"))
        sizes.append(size)
        return size

    sender = RemoteOutputChannel("a[0]->b[0]", 1000, 64, push)
    for n in range(100):  # about 10 kB a record: 64 of them would go through Ray's object store
        await sender.send([f"{n:05}" + "x" * 10_000])
    assert sizes[0] > INLINE_BYTES and all(size < INLINE_BYTES for size in sizes[1:])
    for _ in range(200):
        await sender.send([1])  # small records again: frames grow back to 64 records
    assert sender._frame_records == 64


class Defined:
    """A class pickle names by module, like any importable one."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Defined)


async def test_frames_carry_records_of_classes_the_workers_cannot_import_by_value() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("class Point:\n    def __init__(self, x):\n        self.x = x\n", namespace)  # as in a notebook
    point = namespace["Point"](3)
    data = encode_frame(([[point, Defined()]], {}), "a[0]->b[0]")
    (batch,), _ = decode_frame(data, "a[0]->b[0]")
    assert batch[0].x == 3 and batch[1] == Defined()


async def test_a_frame_that_cannot_be_pickled_names_its_channel() -> None:
    with pytest.raises(FrameError, match=r"a\[0\]->b\[1\] cannot be pickled"):
        encode_frame(([[threading.Lock()]], {}), "a[0]->b[1]")
    with pytest.raises(FrameError, match=r"came on channel a\[0\]->b\[1\] cannot be unpickled"):
        decode_frame(b"not a pickle", "a[0]->b[1]")


async def test_storage_that_lives_in_one_process_is_reached_through_the_driver() -> None:
    memory = lg.MemoryCheckpointStorage(inline_threshold=0)  # every blob stored in the driver's memory
    files = lg.FileCheckpointStorage("file:///tmp/lockgate-test-unused")
    assert reachable_from_workers(files) is files
    proxy = reachable_from_workers(memory)
    assert isinstance(proxy, DriverStorage)
    location = await proxy.create_checkpoint_location(1)  # in the driver, it calls the storage itself
    handle = await proxy.write_state(location, "blob", b"state")
    assert await memory.read_state(handle) == b"state"
    copy = __import__("pickle").loads(__import__("pickle").dumps(proxy))  # as a worker receives it
    with pytest.raises(RuntimeError, match="has no link to it"):
        await copy.read_state(handle)


def test_the_runner_refuses_what_it_cannot_use() -> None:
    with pytest.raises(lg.ConfigurationError, match="frame_records"):
        lg.RayRunner(frame_records=0)
    with pytest.raises(lg.ConfigurationError, match="linger"):
        lg.RayRunner(linger=0)
    with pytest.raises(lg.ConfigurationError, match="num_cpus"):
        lg.RayRunner(num_cpus=-1)
    with pytest.raises(lg.ConfigurationError, match="runner is a runner"):
        lg.StreamEnvironment(runner="ray")  # type: ignore[arg-type]


def test_a_ray_the_runner_starts_asks_for_loopback_only() -> None:
    """Without an address, the runner has Ray take 127.0.0.1 as this node's address (it asks before Ray
    is imported); Ray is not started here, and nothing is sent anywhere."""
    script = (
        "import sys, lockgate as lg\n"
        "assert 'ray' not in sys.modules\n"
        "lg.RayRunner()._ask_for_loopback()\n"
        "import ray._private.services as services\n"
        "print(services.get_node_ip_address())\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "127.0.0.1"


async def test_a_source_fed_in_this_process_is_refused_at_the_start_saying_why() -> None:
    """A QueueSource's copy in a Ray worker would never see what the application puts: refused, before
    Ray is started."""
    env = lg.StreamEnvironment(runner=lg.RayRunner())
    env.from_source(lg.QueueSource(), uid="queue").sink(lg.CollectSink(), uid="out")
    with pytest.raises(lg.ConfigurationError, match=r"source\(s\) \['queue'\] read what this process hands"):
        await env.start("fed here")
