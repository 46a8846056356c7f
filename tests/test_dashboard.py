"""The dashboard page (``GET /`` of the job server): served with everything it needs and nothing from
elsewhere, behind the token when there is one, and, in headless Chromium driven by Playwright, showing
a real job while it runs: every operator, counts that grow, the checkpoint history with its failure.

The browser tests skip where no Chromium (or no Playwright) can be found. One browser serves the
whole file, in a thread of its own: Playwright's sync API there, the job in the test's event loop.
The run on asyncio takes a screenshot; with LOCKGATE_UPDATE_SCREENSHOT=1 it becomes the README's,
docs/dashboard.png (a plain test run leaves the tree as it was).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import httpx
import pytest

import lockgate as lg
from lockgate.snapshots import CheckpointLocation, StateData
from lockgate.snapshots import StreamStateHandle as Handle
from tests._sources import GUARD, until_or_failure
from tests.test_recovery import Watch

pytestmark = pytest.mark.anyio

TOKEN = "dashboard-token"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"

#: Text of the job that would be markup if the page took it for HTML: it must show as written.
COUNT_UID = 'count <i>"keys"</i>'
JOB_NAME = "clicks <b>&</b> counts"
FAILURE = "disk <em>full</em> & gone"

#: Headless, and nothing that reaches for the network (this machine may have none).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

T = TypeVar("T")


class FailsSecond(lg.MemoryCheckpointStorage):
    """Memory storage that cannot write the state of checkpoint 2: it fails, with markup in its
    message; the others complete."""

    async def write_state(self, location: CheckpointLocation, name: str, data: StateData) -> Handle:
        if location.checkpoint_id == 2:
            raise lg.CheckpointError(FAILURE)
        return await super().write_state(location, name, data)


class Count(lg.KeyedProcessFunction[tuple[str, int], tuple[str, int]]):
    """A running count per key, with some work per record so that it is the busy one."""

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.count = ctx.get_state(lg.ValueStateDescriptor("count", default=0))

    async def process_element(self, value: tuple[str, int], ctx: lg.RuntimeContext) -> AsyncIterator[Any]:
        total = await self.count.value() + value[1]
        await self.count.update(total)
        sum(range(5000))  # the work
        yield (value[0], total)


UIDS = ["src", "parse", COUNT_UID, "watch", "out"]
EPOCH = 1_798_761_600_000  # 2027-01-01 00:00 UTC, in ms


async def start(token: str | None) -> tuple[lg.Job, lg.JobServer, lg.QueueSource[int], Watch]:
    """src -> parse (one chain, parallelism 1) =hash=> count -> watch -> out (one chain, 2)."""
    env = lg.StreamEnvironment(parallelism=2, max_parallelism=16, batch_size=16)
    env.enable_checkpointing(3600)
    env.set_checkpoint_storage(FailsSecond())
    env.checkpoint_config.tolerable_failures = 5
    source: lg.QueueSource[int] = lg.QueueSource(maxsize=256)
    watch = Watch()
    # Record n happened n tenths of a second after 2027-01-01 00:00 UTC: the watermarks show as times.
    clock = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda n, _: EPOCH + n * 100
    )
    (
        env.from_source(source, uid="src", watermark_strategy=clock)
        .map(lambda n: (f"key-{n % 7}", 1), uid="parse", parallelism=1)
        .key_by(lambda record: record[0])
        .process(Count(), uid=COUNT_UID)
        .map(watch, uid="watch")
        .sink(lg.CollectSink(), uid="out")
    )
    job = await env.start(JOB_NAME)
    server = await job.serve(port=0, token=token)
    return job, server, source, watch


@pytest.fixture
async def served() -> AsyncIterator[tuple[lg.Job, lg.JobServer]]:
    job, server, _, _ = await start(None)
    try:
        yield job, server
    finally:
        await server.aclose()
        await job.cancel()


# ---- the page, as served: everywhere -------------------------------------------------------------


def inline(page: str, tag: str) -> str:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    assert len(found) == 1, f"one inline <{tag}> expected"
    return found[0]


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_page_is_one_document_that_loads_nothing_from_elsewhere(
    served: tuple[lg.Job, lg.JobServer],
) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    page = response.text
    script, style = inline(page, "script"), inline(page, "style")
    assert "function perOperator" in script and ".vertex-box" in style
    # The policy lets exactly the inline script and style run, and the page reach only its server.
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == csp_hash(script)
    assert policy["style-src"] == csp_hash(style)
    assert policy["connect-src"] == "'self'"
    # No address of another host, and nothing loaded by address at all (the icon is inline data).
    assert re.findall(r"(?i)https?:|//[a-z0-9.-]+\.[a-z]{2,}", page) == []
    assert re.findall(r"(?i)\bsrc\s*=", page) == []
    assert re.findall(r"(?i)\bhref\s*=\s*\"([^\"]*)\"", page) == ["data:,"]
    assert re.findall(r"(?i)@import|url\((?!#)", page) == []
    # What the page asks for is relative to it, so that it works under any host and port.
    asked = set(re.findall(r"getJson\(\"([^\"]+)\"\)", script))
    assert asked == {"api/job", "api/metrics", "api/checkpoints?last=40"}
    # It puts no text of the job into the page as markup.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_the_page_files_ship_in_the_package() -> None:
    folder = importlib.resources.files("lockgate.observe").joinpath("dashboard")
    assert sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith(".")) == [
        "dashboard.css",
        "dashboard.js",
        "index.html",
    ]
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    for pattern in ("observe/dashboard/*.html", "observe/dashboard/*.js", "observe/dashboard/*.css"):
        assert pattern in pyproject


async def test_with_a_token_the_page_opens_with_it_in_its_address_and_the_api_only_with_the_header() -> None:
    job, server, _, _ = await start(TOKEN)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/")).status_code == 401
            assert (await http.get("/", params={"token": "wrong"})).status_code == 401
            assert (await http.get("/", params={"token": TOKEN})).status_code == 200
            headers = {"Authorization": f"Bearer {TOKEN}"}
            assert (await http.get("/", headers=headers)).status_code == 200
            # The token in the address opens the page, nothing else.
            for path in ("/api/job", "/api/metrics", "/api/checkpoints", "/metrics"):
                assert (await http.get(path, params={"token": TOKEN})).status_code == 401, path
                assert (await http.get(path, headers=headers)).status_code == 200, path
            refused = await http.get("/api/job")
            assert "?token=" in refused.json()["error"]
    finally:
        await server.aclose()
        await job.cancel()


async def test_without_a_token_the_page_answers_only_to_a_loopback_host(
    served: tuple[lg.Job, lg.JobServer],
) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/", headers={"Host": "rebound.example:80"})).status_code == 403
        assert (await http.get("/", headers={"Host": "localhost"})).status_code == 200


async def test_the_job_route_gives_the_chains_and_the_edges_the_page_draws() -> None:
    env = lg.StreamEnvironment(parallelism=1, max_parallelism=16)
    odd = lg.OutputTag("odd <one>")

    class Split(lg.ProcessFunction[int, int]):
        def process_element(self, value: int, ctx: lg.RuntimeContext) -> Iterator[int]:
            if value % 2:
                ctx.output(odd, value)
            else:
                yield value

    first: lg.QueueSource[int] = lg.QueueSource()
    second: lg.QueueSource[int] = lg.QueueSource()
    evens = env.from_source(first, uid="src").process(Split(), uid="split").rebalance()
    evens.map(lambda n: n, uid="double", parallelism=2).sink(lg.CollectSink(), uid="evens", parallelism=2)
    split = env.from_source(second, uid="other").process(Split(), uid="split-2")
    split.get_side_output(odd).sink(lg.CollectSink(), uid="odds")
    split.sink(lg.CollectSink(), uid="kept")
    job = await env.start("shape")
    server = await job.serve(port=0)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            described = (await http.get("/api/job")).json()
    finally:
        await server.aclose()
        await job.cancel()
    chains = [[op["uid"] for op in vertex["operators"]] for vertex in described["vertices"]]
    assert chains == [["src", "split"], ["double", "evens"], ["other", "split-2"], ["odds"], ["kept"]]
    assert [vertex["parallelism"] for vertex in described["vertices"]] == [1, 2, 1, 1, 1]
    assert [vertex["index"] for vertex in described["vertices"]] == [0, 1, 2, 3, 4]
    # A side output never chains, and an operator with two consumers chains into neither.
    assert described["edges"] == [
        {"source": 0, "target": 1, "kind": "rebalance", "input": 0, "side_output": None},
        {"source": 2, "target": 3, "kind": "forward", "input": 0, "side_output": "odd <one>"},
        {"source": 2, "target": 4, "kind": "forward", "input": 0, "side_output": None},
    ]
    # Every operator is still listed with its parallelism, chained or not.
    assert {"uid": "double", "parallelism": 2} in described["operators"]
    names = {op["uid"]: op["name"] for vertex in described["vertices"] for op in vertex["operators"]}
    assert names["split"] == "split"


# ---- the page in a browser -----------------------------------------------------------------------


def chromium_path() -> str | None:
    """Debian's chromium (or $LOCKGATE_CHROMIUM), if there is one."""
    named = os.environ.get("LOCKGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return named if os.path.isfile(named) and os.access(named, os.X_OK) else None


class BrowserThread:
    """A headless Chromium, driven through Playwright's sync API from one thread of its own (its
    objects belong to the thread that made them); :meth:`run` calls a function there."""

    def __init__(self, executable: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self.browser: Any = self.run(self._launch, executable)

    def _launch(self, executable: str) -> Any:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        # Playwright gives each launch a fresh, temporary user-data-dir.
        return self._playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)

    def run(self, function: Callable[..., T], *args: Any) -> T:
        return self._thread.submit(function, *args).result()

    def close(self) -> None:
        def stop() -> None:
            self.browser.close()
            self._playwright.stop()

        try:
            self.run(stop)
        finally:
            self._thread.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserThread]:
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium: install Debian's chromium (apt-get install chromium), or set LOCKGATE_CHROMIUM "
            "to a Chromium binary, for the browser tests"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("no Playwright: pip install playwright (the Python package; the browser is Debian's)")
    launched = BrowserThread(executable)
    try:
        yield launched
    finally:
        launched.close()


class Tab:
    """One page of the browser and every error it reports. Its methods run in the browser's thread."""

    def __init__(self, browser: Any, url: str) -> None:
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(GUARD * 1000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.goto(url)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def wait_for(self, condition: str, argument: Any = None) -> None:
        """Wait until the JavaScript function ``condition`` is true of ``argument``."""
        self.page.wait_for_function(condition, arg=argument)

    def shown_records(self) -> int:
        return int(self.page.get_attribute("#card-out", "data-value") or 0)

    def close(self) -> None:
        self.context.close()


SHOWS_OPERATORS = """uids => uids.every(uid =>
    [...document.querySelectorAll('#operators tbody tr')].some(row =>
        row.getAttribute('data-uid') === uid && row.querySelector('td').textContent === uid)
    && [...document.querySelectorAll('#graph g.operator')].some(row =>
        row.getAttribute('data-uid') === uid && row.querySelector('text').textContent === uid))"""

SHOWS_AT_LEAST = "count => Number(document.getElementById('card-out').getAttribute('data-value')) >= count"

SHOWS_CHECKPOINTS = """ids => ids.every(id => document.querySelector(
    '#checkpoints tr[data-checkpoint="' + id + '"]') && document.querySelector(
    '#checkpoint-chart rect[data-checkpoint="' + id + '"]'))"""


def first_look(browser: Any, url: str, uids: list[str], records: int) -> Tab:
    tab = Tab(browser, url)
    tab.wait_for(SHOWS_OPERATORS, uids)
    tab.wait_for(SHOWS_AT_LEAST, records)
    tab.wait_for(SHOWS_CHECKPOINTS, [1, 2, 3])
    page = tab.page
    assert tab.shown_records() == records
    assert page.text_content("#job-name") == JOB_NAME
    assert page.text_content("#job-status") == "running"
    failed = page.locator('#checkpoints tr[data-checkpoint="2"]')
    assert failed.get_attribute("class") == "failed"
    assert FAILURE in (failed.text_content() or "")
    # Text of the job that looks like markup stayed text.
    assert page.locator("main b, main i, main em, header b").count() == 0
    # Two chains: the graph draws two boxes, joined by one hash edge.
    assert page.locator("#graph g.vertex").count() == 2
    assert page.locator("#graph path.edge").get_attribute("data-kind") == "hash"
    assert page.is_hidden("#problem")
    # Each subtask has a row of its own, once asked for.
    page.click("#subtasks-details summary")
    subtasks = ["src[0]", "parse[0]", *(f"{uid}[{i}]" for uid in UIDS[2:] for i in range(2))]
    tab.wait_for(
        "keys => keys.every(key => [...document.querySelectorAll('#subtasks tbody tr')]"
        ".some(row => row.querySelector('td').textContent === key))",
        subtasks,
    )
    page.click("#subtasks-details summary")
    return tab


def second_look(tab: Tab, records: int, screenshot: Path | None) -> int:
    tab.wait_for(SHOWS_AT_LEAST, records)
    tab.wait_for(SHOWS_CHECKPOINTS, [1, 2, 3, 4])
    # The watermarks, as times: the count operator's has passed record 100's.
    tab.wait_for(
        """([uid, least]) => [...document.querySelectorAll('#operators tbody tr')].some(row => {
            const shown = row.querySelector('[data-metric="currentOutputWatermark"]');
            return row.getAttribute('data-uid') === uid
                && Number(shown.getAttribute('data-value')) >= least
                && shown.textContent.startsWith('2027-01-01 ');
        })""",
        [COUNT_UID, EPOCH + 100 * 100],
    )
    # The busy stream shows in the colours: some operator is no longer idle blue.
    tab.wait_for(
        """() => [...document.querySelectorAll('#graph g.operator > rect:first-of-type')]
            .some(rect => rect.getAttribute('fill') !== 'rgb(79, 134, 198)')"""
    )
    if screenshot is not None:
        tab.page.screenshot(path=str(screenshot), full_page=True)
    shown = tab.shown_records()
    tab.close()
    return shown


async def test_the_page_shows_a_running_job_and_follows_it(
    browser: BrowserThread, anyio_backend: str, tmp_path: Path
) -> None:
    # The token's way (the page opened as /?token=...) on trio, the token-less one on asyncio.
    token = TOKEN if anyio_backend == "trio" else None
    job, server, source, watch = await start(token)
    url = server.url + "/" + (f"?token={TOKEN}" if token else "")
    try:
        with anyio.fail_after(GUARD * 4):
            for n in range(100):
                await source.put(n)
            await until_or_failure(job, lambda: watch.until(100))
            await job.trigger_checkpoint()
            with pytest.raises(lg.CheckpointError, match="disk"):
                await job.trigger_checkpoint()
            await job.trigger_checkpoint()

            tab = await anyio.to_thread.run_sync(browser.run, first_look, browser.browser, url, UIDS, 100)

            # Now a stream that does not stop until the page has shown it, and a checkpoint in it.
            stop = anyio.Event()

            async def feed() -> None:
                n = 100
                while not stop.is_set():
                    await source.put(n)
                    n += 1
                    if n % 64 == 0:
                        await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as group:
                group.start_soon(feed)
                await until_or_failure(job, lambda: watch.until(2000))
                await job.trigger_checkpoint()
                screenshot = None
                if anyio_backend == "asyncio":
                    update = os.environ.get("LOCKGATE_UPDATE_SCREENSHOT") == "1"
                    screenshot = SCREENSHOT if update else tmp_path / "dashboard.png"
                shown = await anyio.to_thread.run_sync(browser.run, second_look, tab, 2000, screenshot)
                stop.set()
            assert shown >= 2000
            assert tab.errors == []
            if screenshot is not None:
                assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        await server.aclose()
        await job.cancel()
