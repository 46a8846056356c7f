"""The job server, from the outside: a real job served over HTTP on both event loops, asked through
``lg.QueryableStateClient`` and through raw httpx."""

from __future__ import annotations

import base64
import pickle
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

import lockgate as lg
from tests._sources import GUARD, until_or_failure
from tests.test_queries import Totals
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


async def start(
    key: Callable[[tuple[Any, int]], Any] = lambda record: record[0], *, checkpointing: bool = False
) -> tuple[lg.Job, lg.QueueSource[tuple[Any, int]], Watch]:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=3)
    if checkpointing:
        env.enable_checkpointing(3600)
    source: lg.QueueSource[tuple[Any, int]] = lg.QueueSource()
    watch = Watch()
    keyed = env.from_source(source, uid="src").key_by(key)
    keyed.process(Totals(), uid="totals").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    return await env.start("served"), source, watch


async def fed(records: list[tuple[Any, int]], **options: Any) -> AsyncIterator[tuple[lg.Job, lg.JobServer]]:
    """A job that has processed ``records``, served on a free port; both closed after."""
    token = options.pop("token", None)
    job, source, watch = await start(**options)
    try:
        with anyio.fail_after(GUARD):
            for record in records:
                await source.put(record)
            await until_or_failure(job, lambda: watch.until(len(records)))
            server = await job.serve(port=0, token=token)
        try:
            yield job, server
        finally:
            await server.aclose()
    finally:
        await job.cancel()


@pytest.fixture
async def served() -> AsyncIterator[tuple[lg.Job, lg.JobServer]]:
    async for pair in fed([("alice", 4), ("alice", 5), ("bob", 1)]):
        yield pair


async def test_a_queryable_state_answers_through_the_client_and_raw_http(
    served: tuple[lg.Job, lg.JobServer],
) -> None:
    _, server = served
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
    async with lg.QueryableStateClient(server.url) as client:
        assert await client.get("totals", "alice") == 9
        assert await client.get("totals", "nobody") is None
        assert await client.get_many("totals", ["bob", "alice", "nobody"]) == [1, 9, None]
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/state/totals", params={"key": '"alice"'})
        assert (response.status_code, response.json()) == (200, {"key": "alice", "value": 9})
        missing = await http.get("/api/state/totals?key=%22carol%22")
        assert missing.status_code == 404 and "no value" in missing.json()["error"]
        described = (await http.get("/api/job")).json()
        assert described["name"] == "served" and described["status"] == "running"
        assert {"uid": "totals", "parallelism": 2} in described["operators"]
        assert described["queryable_states"] == [{"name": "totals", "operator": "totals", "state": "total"}]
        checkpoints = await http.get("/api/checkpoints")
        assert checkpoints.json() == {"completed": 0, "failed": 0, "in_progress": 0, "history": []}


async def test_bad_requests_are_400_with_a_message_never_a_500(served: tuple[lg.Job, lg.JobServer]) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path, message in [
            ("/api/state/nope?key=1", "no queryable state 'nope'; there are ['totals']"),
            # "amounts" is a keyed state of the same operator, but not marked queryable.
            ("/api/state/amounts?key=%22alice%22", "no queryable state 'amounts'"),
            ("/api/state/total?key=%22alice%22", "no queryable state 'total'"),
            ("/api/state/totals?key=alice", "key is not JSON"),
            ("/api/state/totals?key=%7B%7D", "cannot be a JSON object"),
            ("/api/state/totals", "give the key"),
            (
                "/api/state/totals?key_b64=" + base64.urlsafe_b64encode(pickle.dumps("alice")).decode(),
                "token",
            ),
        ]:
            response = await http.get(path)
            assert response.status_code == 400, path
            assert message in response.json()["error"]
            assert "Traceback" not in response.text
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.post("/api/job")).status_code == 405
        # A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) is no loopback client.
        assert (await http.get("/api/job", headers={"Host": "evil.example:80"})).status_code == 403
    async with lg.QueryableStateClient(server.url) as client:
        with pytest.raises(lg.LockgateError, match="400: no queryable state 'nope'"):
            await client.get("nope", "alice")


async def test_with_a_token_every_request_needs_it_and_any_address_may_be_bound() -> None:
    async for job, server in fed([("alice", 2)], token=TOKEN):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
                response = await http.get("/api/state/totals", params={"key": '"alice"'})
                assert response.status_code == 401 and "token" in response.json()["error"]
                assert (await http.get("/api/job")).status_code == 401
        async with lg.QueryableStateClient(server.url, token="wrong") as client:
            with pytest.raises(lg.LockgateError, match="401"):
                await client.get("totals", "alice")
        async with lg.QueryableStateClient(server.url, token=TOKEN) as client:
            assert await client.get("totals", "alice") == 2
        other = await job.serve(host="0.0.0.0", port=0, token=TOKEN)
        await other.aclose()


async def test_beyond_loopback_without_a_token_the_server_refuses_to_start() -> None:
    async for job, _ in fed([("alice", 2)]):
        for host in ("0.0.0.0", "::", "192.0.2.1"):
            with pytest.raises(lg.ConfigurationError, match="without a token"):
                await job.serve(host=host, port=0)


async def test_tuple_keys_travel_as_json_arrays_and_other_keys_pickled_with_a_token() -> None:
    async for _, server in fed([("alice", 4), ("bob", 1)], key=lambda record: (record[0], len(record[0]))):
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/api/state/totals", params={"key": '["alice", 5]'})
            assert response.json() == {"key": ["alice", 5], "value": 4}
        async with lg.QueryableStateClient(server.url) as client:
            assert await client.get("totals", ("bob", 3)) == 1
    async for _, server in fed([("alice", 4)], key=lambda record: record[0].encode(), token=TOKEN):
        async with lg.QueryableStateClient(server.url, token=TOKEN) as client:
            assert await client.get("totals", b"alice") == 4  # bytes: sent as key_b64
            assert await client.get("totals", b"bob") is None
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            response = await http.get("/api/state/totals", params={"key_b64": "not base64 of a pickle"})
            assert response.status_code == 400 and "key_b64" in response.json()["error"]


async def test_a_job_that_has_ended_answers_503() -> None:
    async for job, server in fed([("alice", 2)]):
        await job.cancel()
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/api/state/totals", params={"key": '"alice"'})
            assert response.status_code == 503 and "has ended" in response.json()["error"]
            assert (await http.get("/api/job")).json()["status"] == "cancelled"


async def test_concurrent_queries_while_checkpoints_are_taken_all_succeed_and_never_go_back() -> None:
    records = [(key, amount) for amount in range(1, 16) for key in "abcd"]
    job, source, watch = await start(checkpointing=True)
    server = await job.serve(port=0)
    seen: list[dict[str, list[int]]] = [defaultdict(list), defaultdict(list)]  # per query loop
    done = anyio.Event()
    checkpoints = 0
    two_checkpoints = anyio.Event()

    async def checkpoint_meanwhile() -> None:
        nonlocal checkpoints
        while not done.is_set():
            await job.trigger_checkpoint()
            checkpoints += 1
            if checkpoints == 2:
                two_checkpoints.set()

    async def query_meanwhile(client: lg.QueryableStateClient, seen: dict[str, list[int]]) -> None:
        while not done.is_set():
            for key, total in zip("abcde", await client.get_many("totals", "abcde"), strict=True):
                seen[key].append(0 if total is None else total)

    try:
        with anyio.fail_after(GUARD):
            async with lg.QueryableStateClient(server.url) as client, anyio.create_task_group() as group:
                group.start_soon(checkpoint_meanwhile)
                group.start_soon(query_meanwhile, client, seen[0])
                group.start_soon(query_meanwhile, client, seen[1])
                for record in records:
                    await source.put(record)
                    await anyio.lowlevel.checkpoint()
                await until_or_failure(job, lambda: watch.until(len(records)))
                await two_checkpoints.wait()
                done.set()
            async with lg.QueryableStateClient(server.url) as client:
                assert await client.get_many("totals", "abcde") == [120, 120, 120, 120, None]
        assert job.checkpoint_stats.completed >= 2
        for each in seen:
            for key in "abcd":
                assert each[key] and each[key] == sorted(each[key])  # never back
    finally:
        await server.aclose()
        await job.cancel()


class Twice(lg.KeyedProcessFunction[tuple[Any, int], Any]):
    """A second operator claiming the public name "totals" too."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor[int]("count", default=0).queryable("totals"))

    def process_element(self, record: tuple[Any, int], ctx: lg.RuntimeContext) -> Iterator[Any]:
        self.count.update_nowait(self.count.value_nowait() + 1)
        yield record


async def test_two_states_claiming_one_public_name_are_a_400_naming_both() -> None:
    env = lg.StreamEnvironment(parallelism=1)
    source: lg.QueueSource[tuple[Any, int]] = lg.QueueSource()
    keyed = env.from_source(source, uid="src").key_by(lambda record: record[0])
    totals = keyed.process(Totals(), uid="totals").key_by(lambda record: record[0])
    totals.process(Twice(), uid="twice").sink(lg.CollectSink(), uid="out")
    job = await env.start("clash")
    try:
        with anyio.fail_after(GUARD):
            server = await job.serve(port=0)
            try:
                async with httpx.AsyncClient() as http:
                    answer = await http.get(f"{server.url}/api/state/totals", params={"key": '"a"'})
            finally:
                await server.aclose()
        assert answer.status_code == 400
        assert (
            "state 'total' of 'totals' and state 'count' of 'twice' are both queryable"
            in answer.json()["error"]
        )
    finally:
        await job.cancel()


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
async def test_queries_during_a_restart_are_503_or_wait_and_then_read_the_restored_state(
    backend: str,
) -> None:
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=3)
    if backend == "rocksdb":
        env.set_state_backend(lg.RocksDBStateBackend())
    env.enable_checkpointing(3600)
    env.set_restart_strategy(lg.RestartStrategy.fixed_delay(attempts=1, delay=0.5))
    source: lg.QueueSource[tuple[Any, int]] = lg.QueueSource()
    watch = Watch()
    crashed: list[tuple[Any, int]] = []

    def crash_once(record: tuple[Any, int]) -> tuple[Any, int]:
        if record[0] == "poison" and not crashed:
            crashed.append(record)
            raise RuntimeError("poison")
        return record

    keyed = env.from_source(source, uid="src").map(crash_once, uid="crash").key_by(lambda r: r[0])
    keyed.process(Totals(), uid="totals").map(watch, uid="watch").sink(lg.CollectSink(), uid="out")
    job = await env.start("restarting")
    server = await job.serve(port=0)
    answers: list[tuple[int, Any]] = []
    waited: list[Any] = []
    try:
        with anyio.fail_after(GUARD):
            for record in [("alice", 4), ("alice", 5)]:
                await source.put(record)
            await until_or_failure(job, lambda: watch.until(2))
            await job.trigger_checkpoint()  # alice's 9 is in it
            await source.put(("poison", 1))
            async with httpx.AsyncClient(base_url=server.url) as http, anyio.create_task_group() as group:

                async def in_process() -> None:  # asked during the restart: waits for the next attempt
                    waited.append(await job.query_state("totals", "total", "alice"))
                    waited.append(job.restarts)

                while not (job.restarts == 1 and answers and answers[-1][0] == 200):
                    response = await http.get("/api/state/totals", params={"key": '"alice"'})
                    body = response.json()
                    answers.append((response.status_code, body.get("value", body.get("error"))))
                    if response.status_code == 503 and not waited:
                        waited.append("asked")
                        group.start_soon(in_process)
        statuses = {status for status, _ in answers}
        assert 503 in statuses and statuses <= {200, 503}, answers
        assert all(value == 9 for status, value in answers if status == 200)  # never a half-restored table
        assert all("is restarting" in error for status, error in answers if status == 503)
        assert waited == ["asked", 9, 1]
        with anyio.fail_after(GUARD):  # the new attempt keeps its checkpoints' state for queries too
            async with anyio.create_task_group() as group:
                checkpointed: list[Any] = []

                async def ask() -> None:
                    checkpointed.append(await job.query_state("totals", "total", "alice", "checkpoint"))

                group.start_soon(ask)
                while not checkpointed:
                    await job.trigger_checkpoint()
                    await anyio.lowlevel.checkpoint()
        assert checkpointed == [9]
    finally:
        await server.aclose()
        await job.cancel()


async def long_steps(stop: anyio.Event) -> None:
    """Steps of 10 ms of work each, as a slow batch or function would hold the loop."""
    while not stop.is_set():
        until = time.perf_counter() + 0.01
        while time.perf_counter() < until:
            pass
        await anyio.lowlevel.checkpoint()


async def test_a_server_answers_beside_a_loop_busy_with_long_steps() -> None:
    """The server lets a busy loop run before each answer: steps longer than what an answer owes
    the loop pay for it at once."""
    async for _, server in fed([("alice", 4)]):
        stop = anyio.Event()
        async with lg.QueryableStateClient(server.url) as client, anyio.create_task_group() as group:
            group.start_soon(long_steps, stop)
            with anyio.fail_after(GUARD):
                assert await client.get_many("totals", ["alice"] * 8) == [4] * 8
            stop.set()
