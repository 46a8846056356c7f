"""The job graph: chaining, partitioning and uids, as a user of the stream API sees them."""

from __future__ import annotations

import lockgate as lg
from lockgate.graph import (
    ForwardPartitioner,
    JobGraph,
    KeyGroupPartitioner,
    RebalancePartitioner,
    build_job_graph,
)


def graph_of(env: lg.StreamEnvironment) -> JobGraph:
    return build_job_graph(env._transformations, env.max_parallelism)


def chains(env: lg.StreamEnvironment) -> list[list[str]]:
    return [[op.uid for op in vertex.operators] for vertex in graph_of(env).vertices]


def test_forward_operators_of_equal_parallelism_chain_into_one_vertex() -> None:
    env = lg.StreamEnvironment()
    env.from_collection([1], uid="s").map(abs, uid="a").filter(bool, uid="b").sink(lg.CollectSink(), uid="k")
    assert chains(env) == [["s", "a", "b", "k"]]


def test_chains_break_at_shuffles_parallelism_changes_fan_out_and_unions() -> None:
    env = lg.StreamEnvironment(parallelism=2)
    source = env.from_collection([1], uid="s")  # parallelism 1
    mapped = source.map(abs, uid="m")  # parallelism 2: a rebalance edge, no chain
    keyed = mapped.key_by(lambda x: x).sum(uid="sum")  # a hash edge
    keyed.sink(lg.CollectSink(), uid="k1")  # fan-out below: no chain either
    keyed.map(abs, uid="m2").union(mapped).sink(lg.CollectSink(), uid="k2")
    graph = graph_of(env)
    assert chains(env) == [["s"], ["m"], ["sum"], ["k1"], ["m2"], ["k2"]]
    edges = {
        (e.source.operators[0].uid, e.target.operators[0].uid): e.partitioner
        for v in graph.vertices
        for e in v.outputs
    }
    assert isinstance(edges["s", "m"], RebalancePartitioner)
    assert isinstance(edges["m", "sum"], KeyGroupPartitioner)
    assert isinstance(edges["sum", "k1"], ForwardPartitioner)
    assert isinstance(edges["m", "k2"], ForwardPartitioner)
    assert isinstance(edges["m2", "k2"], ForwardPartitioner)


def test_operators_without_uid_get_a_deterministic_one() -> None:
    def build() -> list[list[str]]:
        env = lg.StreamEnvironment()
        env.from_collection([1]).map(abs).key_by(abs).sum().sink(lg.PrintSink())
        return chains(env)

    assert build() == build()
    assert build()[0][0].startswith("source-")


def test_reprs_show_the_runtime_shape() -> None:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16)
    env.from_collection([1], uid="s").map(abs, uid="m").sink(lg.CollectSink(), uid="k")
    assert "parallelism 2" in repr(env) and "max_parallelism 16" in repr(env)
    assert repr(graph_of(env)) == "<JobGraph [2 vertices: s, m -> k]>"
