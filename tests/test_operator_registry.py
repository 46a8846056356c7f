"""The operator registry: a kind of operator declared wholly outside lockgate (here) runs like a
built-in one, and a spec that no operator is registered for fails with an error that says so."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import lockgate as lg
from lockgate.actors import warn_about_generated_uids
from lockgate.actors._context import SubtaskContext
from lockgate.actors._operators import StreamOperator, create_operator, operator_for
from lockgate.graph import OperatorSpec, build_job_graph

# ---- the toy kinds: a spec (what the graph knows) and an operator (what runs) for each


@dataclass(frozen=True)
class TagSpec(OperatorSpec):
    """Pairs each record with a tag."""

    tag: str
    kind: ClassVar[str] = "tag"
    may_keep_state: ClassVar[bool] = False


@operator_for(TagSpec)  # an operator class whose constructor takes (spec, ctx) is its own factory
class TagOperator(StreamOperator):
    def __init__(self, spec: TagSpec, ctx: SubtaskContext) -> None:
        super().__init__(ctx)
        self.tag = spec.tag

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        return [(self.tag, value) for value in batch]


@dataclass(frozen=True)
class ShoutSpec(TagSpec):
    """A subclass with no operator of its own: it runs on TagSpec's."""

    kind: ClassVar[str] = "shout"


@dataclass(frozen=True)
class CountSpec(OperatorSpec):
    """Emits (key, how many records of the key so far) for each record: keyed state."""

    key_selector: Callable[[Any], Any]
    kind: ClassVar[str] = "count"
    keyed: ClassVar[bool] = True


class CountOperator(StreamOperator):
    def __init__(self, ctx: SubtaskContext, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(ctx)
        self.key_selector = key_selector
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        backend = self.ctx.keyed_backend
        assert backend is not None  # the runner made one, as CountSpec is keyed
        keys = [self.key_selector(record) for record in batch]
        await backend.prepare_batch(keys)
        out = []
        for key in keys:
            backend.current_key = key
            count = await self.count.value() + 1
            await self.count.update(count)
            out.append((key, count))
        await backend.finish_batch()
        return out


@operator_for(CountSpec)  # a factory function, for an operator built from parts of its spec
def count_operator(spec: CountSpec, ctx: SubtaskContext) -> CountOperator:
    return CountOperator(ctx, spec.key_selector)


@dataclass(frozen=True)
class IntoListSpec(OperatorSpec):
    """A sink kind: appends every record to a list."""

    target: list[Any]
    kind: ClassVar[str] = "into_list"
    is_sink: ClassVar[bool] = True


@operator_for(IntoListSpec)
class IntoListOperator(StreamOperator):
    def __init__(self, spec: IntoListSpec, ctx: SubtaskContext) -> None:
        super().__init__(ctx)
        self.target = spec.target

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        self.target.extend(batch)
        return []


@dataclass(frozen=True)
class UnregisteredSpec(OperatorSpec):
    kind: ClassVar[str] = "unregistered"


# ---- whole jobs, built the way DataStream's methods build theirs


@pytest.mark.anyio
async def test_an_operator_kind_defined_outside_lockgate_runs_a_whole_job() -> None:
    env = lg.StreamEnvironment(parallelism=2, batch_size=3)
    tagged = env.from_collection(range(10), uid="src").rebalance()._apply(TagSpec("t"), uid="tag")
    out = tagged.sink(lg.CollectSink[Any](), uid="out")
    await env.execute()
    assert sorted(out.results) == [("t", n) for n in range(10)]


@pytest.mark.anyio
async def test_a_keyed_operator_kind_gets_keyed_state_because_its_spec_says_it_is_keyed() -> None:
    records = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)]
    env = lg.StreamEnvironment(parallelism=2, batch_size=2)
    keyed = env.from_collection(records, uid="src").key_by(lambda r: r[0])
    out = keyed._apply(CountSpec(keyed.key_selector), uid="count").sink(lg.CollectSink[Any](), uid="out")
    await env.execute()
    assert sorted(out.results) == sorted(
        (key, n) for key, total in Counter(key for key, _ in records).items() for n in range(1, total + 1)
    )
    per_key = [count for key, count in out.results if key == "a"]
    assert per_key == [1, 2, 3]  # one key, one subtask: in order


@pytest.mark.anyio
async def test_a_subclass_of_a_spec_runs_on_the_operator_of_its_nearest_registered_base() -> None:
    env = lg.StreamEnvironment()
    out = env.from_collection([1, 2])._apply(ShoutSpec("!")).sink(lg.CollectSink[Any]())
    await env.execute()
    assert out.results == [("!", 1), ("!", 2)]
    [[_, shout, _]] = [[op.uid for op in vertex.operators] for vertex in _graph(env).vertices]
    assert shout.startswith("shout-")  # the subclass's own kind names it


@pytest.mark.anyio
async def test_a_sink_kind_ends_a_job_because_its_spec_says_it_is_a_sink() -> None:
    env = lg.StreamEnvironment()
    target: list[Any] = []
    env.from_collection([1, 2, 3]).map(lambda n: n * 10)._apply(IntoListSpec(target), uid="into")
    await env.execute()
    assert target == [10, 20, 30]


@pytest.mark.anyio
async def test_a_spec_without_a_registered_operator_fails_the_job_start_saying_what_to_register() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1])._apply(UnregisteredSpec(), uid="nothing").sink(lg.CollectSink[Any]())
    message = r"no operator is registered for the operator spec .*UnregisteredSpec: .*@operator_for\("
    with pytest.raises(TypeError, match=message):
        await env.execute()


def test_create_operator_names_the_unregistered_spec_class() -> None:
    ctx = SubtaskContext("nothing", "nothing", 0, 1, 16)
    with pytest.raises(TypeError, match=r"test_operator_registry\.UnregisteredSpec"):
        create_operator(UnregisteredSpec(), ctx)


# ---- declarations: checked where they are written


def test_a_spec_class_has_one_operator_and_only_spec_classes_have_operators() -> None:
    with pytest.raises(TypeError, match="TagSpec already has an operator"):
        operator_for(TagSpec)(lambda spec, ctx: TagOperator(spec, ctx))
    with pytest.raises(TypeError, match="subclasses of OperatorSpec"):
        operator_for(OperatorSpec)(TagOperator)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="subclasses of OperatorSpec"):
        operator_for(int)(TagOperator)  # type: ignore[type-var, arg-type]


def test_a_spec_class_must_declare_its_kind_and_a_keyed_one_keeps_state() -> None:
    with pytest.raises(TypeError, match="must declare its kind"):

        @dataclass(frozen=True)
        class Nameless(OperatorSpec):
            pass

    with pytest.raises(TypeError, match="is keyed, so it keeps state"):

        @dataclass(frozen=True)
        class Contradictory(OperatorSpec):
            kind: ClassVar[str] = "contradictory"
            keyed: ClassVar[bool] = True
            may_keep_state: ClassVar[bool] = False


def test_only_operators_whose_spec_may_keep_state_are_warned_about_for_generated_uids() -> None:
    env = lg.StreamEnvironment()
    keyed = env.from_collection([1], uid="src")._apply(TagSpec("t")).key_by(lambda r: r[0])
    keyed._apply(CountSpec(keyed.key_selector)).sink(lg.CollectSink[Any](), uid="out")
    with pytest.warns(lg.GeneratedUidWarning) as warned:
        warn_about_generated_uids(_graph(env))
    [warning] = warned
    assert "count-" in str(warning.message)
    assert "tag-" not in str(warning.message)

    env = lg.StreamEnvironment()
    env.from_collection([1], uid="src")._apply(TagSpec("t")).map(abs).sink(lg.CollectSink[Any](), uid="out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_generated_uids(_graph(env))


def _graph(env: lg.StreamEnvironment) -> Any:
    return build_job_graph(env._transformations, env.max_parallelism)
