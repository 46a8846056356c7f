"""The job server: a running job's queryable state, graph, checkpoints and metrics over HTTP/JSON,
and a dashboard page that shows them.

An ASGI application (routed here over the ASGI scope) served by hypercorn inside the caller's event
loop, on asyncio or trio. HTTP itself is hypercorn's.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import math
import pickle
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import anyio
import anyio.lowlevel
import sniffio

from lockgate._errors import ConfigurationError, LockgateError
from lockgate.observe import PROMETHEUS_CONTENT_TYPE, job_logger, log_scope, prometheus_text

if TYPE_CHECKING:
    from lockgate.actors._execution import JobExecution
    from lockgate.actors._job import Job

logger = logging.getLogger("lockgate.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

#: What one answer costs the event loop, hypercorn's parsing and writing included (0.5-0.9 ms
#: measured), and the share of the loop a busy stream keeps however fast clients ask (see
#: JobServerApp._give_way). IDLE_ROUNDS rounds in a row shorter than IDLE_ROUND: nothing else runs.
ANSWER_COST = 0.0009
STREAM_SHARE = 0.85
IDLE_ROUND = 0.0001
IDLE_ROUNDS = 3

#: How long a query waits for the subtasks of a starting (or restarted) attempt to open before it
#: answers 503.
QUERY_TIMEOUT = 10.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 possibly in brackets) is the loopback interface."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def to_json(value: Any) -> Any:
    """``value`` as what JSON carries: tuples and sets become arrays, dicts whose keys are not all
    str, int, float, bool or None become ``{"$entries": [[key, value], ...]}``, and anything else
    JSON cannot carry (objects, bytes, infinite floats) ``{"$repr": repr(value)}``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$repr": repr(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        if all(key is None or isinstance(key, (str, int, float, bool)) for key in value):
            return {
                json.dumps(key) if not isinstance(key, str) else key: to_json(v) for key, v in value.items()
            }
        return {"$entries": [[to_json(key), to_json(v)] for key, v in value.items()]}
    return {"$repr": repr(value)}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        raise ValueError("a key cannot be a JSON object (it is not hashable); send key_b64 instead")
    return value


class BadRequest(Exception):
    """The request cannot be answered as asked (400)."""


def decode_key(query: dict[str, list[str]], *, trusted: bool) -> Any:
    """The key of a state query: ``key`` is JSON (arrays become tuples), ``key_b64`` the base64 of
    the pickled key, accepted only from a server with a token (unpickling runs code of the sender's
    choosing)."""
    if "key" in query:
        try:
            return _tuples(json.loads(query["key"][0]))
        except ValueError as exc:
            raise BadRequest(f"key is not JSON ({exc}); a str key is quoted: key=%22alice%22") from None
    if "key_b64" in query:
        if not trusted:
            raise BadRequest(
                "key_b64 is unpickled, which runs code of the sender's choosing: this server accepts it "
                "only with a token (job.serve(token=...)); send keys JSON can carry as key=<JSON>"
            )
        try:
            return pickle.loads(base64.urlsafe_b64decode(query["key_b64"][0].encode("ascii")))
        except (
            binascii.Error,
            ValueError,
            pickle.UnpicklingError,
            EOFError,
            AttributeError,
            ImportError,
        ) as exc:
            raise BadRequest(
                f"key_b64 is not the base64 of a pickled key ({type(exc).__name__}: {exc})"
            ) from None
    raise BadRequest(
        "give the key: key=<JSON> (key=%22alice%22, key=3, key=[1,2]) or key_b64=<base64 pickle>"
    )


def _query(scope: Scope) -> dict[str, list[str]]:
    """The request's query parameters, by name (a parameter given empty is there, as "")."""
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


@dataclasses.dataclass(frozen=True)
class Document:
    """An answer that is not JSON: its content type, bytes and any headers of its own."""

    content_type: str
    payload: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


@functools.cache
def dashboard_document() -> Document:
    """The dashboard page (``GET /``): ``lockgate/observe/dashboard/index.html`` with the style sheet
    and the script of that folder inlined, so that one request loads all of it (with a token too).

    Its Content-Security-Policy lets the page run exactly that script and style (by their hashes) and
    reach nothing but this server: no other script runs in it, even if some text of the job were
    ever taken for markup, and it loads nothing from anywhere else. It is never cached (its address
    may hold the token) and sends no Referer.
    """
    folder = importlib.resources.files("lockgate.observe").joinpath("dashboard")
    page = folder.joinpath("index.html").read_text(encoding="utf-8")
    style = folder.joinpath("dashboard.css").read_text(encoding="utf-8")
    script = folder.joinpath("dashboard.js").read_text(encoding="utf-8")
    if "</" in style or "</" in script:
        raise LockgateError("the dashboard's style and script may not contain '</' (they are inlined)")
    page = page.replace("/*style*/", style, 1).replace("/*script*/", script, 1)
    policy = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return Document(
        "text/html; charset=utf-8",
        page.encode("utf-8"),
        (
            (b"content-security-policy", policy.encode("ascii")),
            (b"cache-control", b"no-store"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
        ),
    )


class JobServerApp:
    """The ASGI application of a job server.

    Routes (all GET, JSON but for ``/metrics`` and ``/``): ``/api/state/{public_name}?key=...`` (200
    ``{"key", "value"}``, 404 for a key without a value), ``/api/job``, ``/api/checkpoints`` (the
    counts and the history; ``?last=N``: the newest N only),
    ``/api/metrics`` (``Job.metrics()``), ``/metrics`` (the same in Prometheus' text format) and ``/``
    (the dashboard page, which polls the JSON routes). Bad input is a 400 with ``{"error": ...}``, a
    missing or wrong token 401, a job restarting or ended 503; never a traceback.

    With a token, every request sends it as ``Authorization: Bearer <token>``; the page alone may
    also be asked for as ``/?token=<token>`` (a browser cannot send a header when a person types an
    address), and its script then sends the header on its own requests.
    """

    def __init__(self, job: Job, execution: JobExecution, token: str | None) -> None:
        self.job = job
        self.execution = execution
        self.token = token
        self._turn = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._give_way()
            status, body = await self._answer(scope)
        except Exception:  # a bug of ours: logged, and a plain answer without the traceback
            job_logger(self.job.name, name=logger.name).exception(
                "the job server failed to answer %s", scope.get("path")
            )
            status, body = 500, {"error": "internal error: see the job's log"}
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if isinstance(body, Document):
            content_type, payload, extra = body.content_type, body.payload, body.headers
        else:
            content_type, payload = "application/json", json.dumps(body).encode("utf-8")
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())]
        headers.extend(extra)
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _give_way(self) -> None:
        """The server is a guest in the job's event loop: before each answer, one answer at a time,
        it lets everything else (the subtasks' steps) run for the time that keeps the stream its
        share of the loop, unless the loop has nothing else to do. A busy stream thus keeps
        ``STREAM_SHARE`` of the loop however fast clients ask; an idle one answers them at once."""
        clock = time.perf_counter
        async with self._turn:
            for _ in range(IDLE_ROUNDS):  # a step may wait a round for another's output: look again
                started = clock()
                await anyio.lowlevel.checkpoint()
                took = clock() - started
                if took >= IDLE_ROUND:  # something else ran: the loop is busy
                    owed = ANSWER_COST * STREAM_SHARE / (1 - STREAM_SHARE) - took
                    if owed > 0:  # a round longer than that has paid already
                        await anyio.sleep(owed)
                    return

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode("utf-8")
        headers = dict(scope.get("headers", []))
        given = headers.get(b"authorization", b"")
        if hmac.compare_digest(given, b"Bearer " + expected):
            return True
        if scope.get("path") != "/":  # the token in the address is taken for the page only
            return False
        tokens = _query(scope).get("token", [])
        return any(hmac.compare_digest(value.encode("utf-8"), expected) for value in tokens)

    async def _answer(self, scope: Scope) -> tuple[int, Any]:
        if not self._authorized(scope):
            return 401, {
                "error": "missing or wrong token: send 'Authorization: Bearer <token>' "
                "(the dashboard page: open /?token=<token>)"
            }
        if self.token is None:
            # Without a token, only pages of this machine may ask: a page from elsewhere that
            # rebinds its DNS name to 127.0.0.1 sends its own name as Host.
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
            if not is_loopback(name):
                return 403, {"error": f"Host {host!r} is not loopback: this server has no token"}
        if scope["method"] not in ("GET", "HEAD"):
            return 405, {"error": f"{scope['method']} is not allowed: every route is GET"}
        path: str = scope["path"]
        if path == "/":
            return 200, dashboard_document()
        if path == "/api/job":
            return 200, self._job()
        if path == "/api/checkpoints":
            last = _query(scope).get("last", [""])[-1]
            if last and not last.isdigit():
                return 400, {"error": f"last is the number of newest checkpoints to show, got {last!r}"}
            statistics = self.execution.checkpoint_statistics(int(last) if last else None)
            return 200, to_json(dataclasses.asdict(statistics))
        if path == "/api/metrics":
            return 200, to_json(self.job.metrics())
        if path == "/metrics":
            text = prometheus_text(self.job.name, self.job.metrics())
            return 200, Document(PROMETHEUS_CONTENT_TYPE, text)
        if path.startswith("/api/state/"):
            name = unquote(path.removeprefix("/api/state/"))
            return await self._state(name, _query(scope))
        return 404, {
            "error": f"no route {path!r}: / (the dashboard), /api/state/<name>?key=..., /api/job, "
            "/api/checkpoints, /api/metrics, /metrics"
        }

    def _job(self) -> dict[str, Any]:
        """The job, its operators, and its graph: ``vertices`` are the chains (operators that run as
        one actor per subtask, head first), ``edges`` join them by index with the kind of their
        partitioning (``forward``, ``rebalance``, ``broadcast``, ``hash``), the input of the target
        they feed and, for a side output, its tag's name."""
        graph = self.execution.graph
        return {
            "name": self.job.name,
            "status": "restarting"
            if self.execution.restarting and not self.job.done
            else self.job.status.value,
            "restarts": self.job.restarts,
            "operators": [
                {"uid": node.uid, "parallelism": vertex.parallelism}
                for vertex in graph.vertices
                for node in vertex.operators
            ],
            "vertices": [
                {
                    "index": vertex.index,
                    "parallelism": vertex.parallelism,
                    "operators": [{"uid": node.uid, "name": node.name} for node in vertex.operators],
                }
                for vertex in graph.vertices
            ],
            "edges": [
                {
                    "source": edge.source.index,
                    "target": edge.target.index,
                    "kind": edge.partitioner.name,
                    "input": edge.input_index,
                    "side_output": None if edge.side_output is None else edge.side_output[1].name,
                }
                for vertex in graph.vertices
                for edge in vertex.inputs
            ],
            "queryable_states": [
                {"name": name, "operator": uid, "state": state}
                for name, (uid, state) in sorted(self.execution.queryable_states().items())
            ],
        }

    def _unavailable(self) -> tuple[int, Any] | None:
        if self.job.done:
            return 503, {"error": f"job {self.job.name!r} has ended ({self.job.status.value})"}
        if self.execution.restarting:
            return 503, {"error": f"job {self.job.name!r} is restarting: ask again shortly"}
        return None

    async def _state(self, name: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        refused = self._unavailable()
        if refused is not None:
            return refused
        try:
            key = decode_key(query, trusted=self.token is not None)
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        with anyio.move_on_after(QUERY_TIMEOUT):
            try:
                found = self.execution.public_state(name)
                if found is None:  # states register as their functions open
                    await self.execution.wait_opened()
                    refused = self._unavailable()  # the attempt failed, or the job ended, meanwhile
                    if refused is not None:
                        return refused
                    found = self.execution.public_state(name)
            except ConfigurationError as exc:
                return 400, {"error": str(exc)}
            if found is None:
                states = sorted(self.execution.queryable_states())
                return 400, {"error": f"no queryable state {name!r}; there are {states}"}
            uid, state = found
            try:
                value = await self.job.query_state(uid, state, key)
            except ConfigurationError:  # the job ended while the query waited
                return self._unavailable() or (503, {"error": "the job is not running"})
            except (LockgateError, TypeError, ValueError) as exc:
                return 400, {"error": f"cannot look up key {key!r}: {type(exc).__name__}: {exc}"}
            if self.execution.restarting:  # read from an attempt that failed: its state is void
                return 503, {"error": f"job {self.job.name!r} is restarting: ask again shortly"}
            if value is None:
                return 404, {"error": f"{name!r} has no value for key {key!r}", "key": to_json(key)}
            return 200, {"key": to_json(key), "value": to_json(value)}
        return self._unavailable() or (
            503,
            {"error": f"job {self.job.name!r} did not open its subtasks within {QUERY_TIMEOUT} s"},
        )


class JobServer:
    """A running job server; made by :meth:`Job.serve`. ``url`` is where it listens (with the port
    the system chose for ``port=0``); :meth:`aclose` stops it and waits until it has."""

    def __init__(self, app: JobServerApp, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{port}"
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._error: Exception | None = None
        self._task: Any = None

    def __repr__(self) -> str:
        state = "closed" if self._stopped.is_set() else "serving"
        return f"<JobServer {self.url} [{self.app.job.name!r} | {state}]>"

    @classmethod
    async def start(
        cls, job: Job, execution: JobExecution, host: str, port: int, token: str | None
    ) -> JobServer:
        """Bind ``host:port`` and serve ``job`` in a task of the running event loop."""
        from hypercorn.config import Config

        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigurationError("token must be a non-empty str, or None on loopback")
        if token is None and not is_loopback(host):
            raise ConfigurationError(
                f"the job server would serve {host!r}, beyond this machine, without a token: "
                "pass token=... (clients then send 'Authorization: Bearer <token>') or bind 127.0.0.1"
            )
        library = sniffio.current_async_library()
        if library not in ("asyncio", "trio"):
            raise LockgateError(f"lockgate runs on asyncio or trio, not on {library}")
        # Bound here, so that port=0 tells its real port and the address is taken before we return;
        # hypercorn is handed the descriptor (and closes it).
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"the job server cannot listen on {host}:{port}: {exc}") from exc
        bound = sock.getsockname()
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = logger
        config.graceful_timeout = 1.0
        server = cls(JobServerApp(job, execution, token), bound[0], bound[1])
        server._task = server._spawn(library, config)
        return server

    def _spawn(self, library: str, config: Any) -> Any:
        from lockgate.actors._job import spawn_detached

        app: Any = self.app  # an ASGI 3 app; hypercorn's types name its scopes' TypedDicts

        async def body() -> None:
            try:
                if library == "trio":
                    from hypercorn.trio import serve as trio_serve

                    await trio_serve(app, config, shutdown_trigger=self._stop.wait)
                else:
                    from hypercorn.asyncio import serve as asyncio_serve

                    await asyncio_serve(app, config, shutdown_trigger=self._stop.wait)
            except Exception as exc:  # kept for aclose(): nothing may escape a detached task
                self._error = exc
            finally:
                self._stopped.set()

        async def scoped() -> None:
            with log_scope(job=self.app.job.name):  # what the server logs names the job
                await body()

        return spawn_detached(scoped, name=f"lockgate job server {self.url}")

    async def aclose(self) -> None:
        """Stop serving (requests under way get a moment to finish) and wait until it has stopped."""
        self._stop.set()
        await self._stopped.wait()
        error, self._error = self._error, None
        if error is not None:
            raise LockgateError(f"the job server at {self.url} failed: {error!r}") from error

    async def __aenter__(self) -> JobServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
