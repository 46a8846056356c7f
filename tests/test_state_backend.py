"""Keyed state sits behind the async backend interface: any backend implementing it just works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

import lockgate as lg
from lockgate.state import MISSING, KeyGroupRange

pytestmark = pytest.mark.anyio


class AsyncOnlyBackend(lg.KeyedStateBackend):
    """A backend with the async interface only, as a remote store would have: no *_nowait."""

    disposed: ClassVar[list[str]] = []  # shared by all instances: what every subtask disposed

    def __init__(self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int) -> None:
        super().__init__(operator_uid, key_group_range, max_parallelism)
        self.data: dict[tuple[str, Any, Any], Any] = {}

    def _create_state(self, descriptor: lg.ValueStateDescriptor[Any]) -> None:
        pass

    async def get(self, state: str, key: Any, namespace: Any) -> Any:
        return self.data.get((state, key, namespace), MISSING)

    async def put(self, state: str, key: Any, namespace: Any, value: Any) -> None:
        self.data[state, key, namespace] = value

    async def delete(self, state: str, key: Any, namespace: Any) -> None:
        self.data.pop((state, key, namespace), None)

    async def items(self, state: str, namespace: Any) -> AsyncIterator[tuple[Any, Any]]:
        for (name, key, space), value in list(self.data.items()):
            if name == state and space == namespace:
                yield key, value

    async def dispose(self) -> None:
        self.disposed.append(self.operator_uid)


class AsyncOnlyStateBackend(lg.StateBackend):
    def create_keyed_backend(
        self, operator_uid: str, key_group_range: KeyGroupRange, max_parallelism: int
    ) -> lg.KeyedStateBackend:
        return AsyncOnlyBackend(operator_uid, key_group_range, max_parallelism)


class Sum(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    def open(self, ctx: lg.RuntimeContext) -> None:
        self.total = ctx.get_state(lg.ValueStateDescriptor("total", default=0))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
        total = await self.total.value() + value[1]
        await self.total.update(total if total else None)  # a zero sum clears the key
        yield (value[0], total)


class FastSum(Sum):
    def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:  # type: ignore[override]
        total = self.total.value_nowait() + value[1]
        self.total.update_nowait(total)
        yield (value[0], total)


DATA = [("a", 1), ("b", 2), ("a", -1), ("a", 5), ("c", 0), ("b", 2)]
EXPECTED = [("a", 1), ("b", 2), ("a", 0), ("a", 5), ("c", 0), ("b", 4)]


@pytest.mark.parametrize(
    "backend", [lg.HeapStateBackend(), AsyncOnlyStateBackend(), lg.state.RocksDBStateBackend()], ids=repr
)
async def test_the_same_job_gives_the_same_results_on_any_backend(backend: lg.StateBackend) -> None:
    AsyncOnlyBackend.disposed.clear()
    env = lg.StreamEnvironment(parallelism=2).set_state_backend(backend)
    out = env.from_collection(DATA).key_by(lambda r: r[0]).process(Sum(), uid="sum").sink(lg.CollectSink())
    await env.execute("backends")
    assert sorted(out.results) == sorted(EXPECTED)
    if isinstance(backend, AsyncOnlyStateBackend):
        assert AsyncOnlyBackend.disposed == ["sum", "sum"]  # each subtask's backend, once


async def test_the_fast_form_on_a_backend_without_nowait_fails_with_advice() -> None:
    env = lg.StreamEnvironment().set_state_backend(AsyncOnlyStateBackend())
    env.from_collection(DATA).key_by(lambda r: r[0]).process(FastSum(), uid="fast").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError, match="'fast'") as failure:
        await env.execute("fast")
    assert isinstance(failure.value.__cause__, lg.ConfigurationError)
    assert "await state.value()" in str(failure.value.__cause__)


async def test_the_backend_is_disposed_when_the_job_fails() -> None:
    AsyncOnlyBackend.disposed.clear()

    class Fails(Sum):
        async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> Any:
            raise RuntimeError("no")
            yield

    env = lg.StreamEnvironment().set_state_backend(AsyncOnlyStateBackend())
    env.from_collection(DATA).key_by(lambda r: r[0]).process(Fails(), uid="fails").sink(lg.CollectSink())
    with pytest.raises(lg.JobFailedError):
        await env.execute("fails")
    assert AsyncOnlyBackend.disposed == ["fails"]


def test_set_state_backend_refuses_anything_else() -> None:
    with pytest.raises(lg.ConfigurationError, match="HeapStateBackend"):
        lg.StreamEnvironment().set_state_backend("heap")  # type: ignore[arg-type]


async def test_a_state_name_declared_twice_shares_one_state() -> None:
    class Twice(lg.KeyedProcessFunction[str, int]):
        def open(self, ctx: lg.RuntimeContext) -> None:
            self.first = ctx.get_state(lg.ValueStateDescriptor("n", default=0))
            self.second = ctx.get_state(lg.ValueStateDescriptor("n", default=0))

        def process_element(self, value: str, ctx: lg.RuntimeContext) -> Any:
            self.first.update_nowait(self.first.value_nowait() + 1)
            yield self.second.value_nowait()

    env = lg.StreamEnvironment()
    out = env.from_collection("aab").key_by(lambda c: c).process(Twice()).sink(lg.CollectSink())
    await env.execute("twice")
    assert out.results == [1, 2, 1]
