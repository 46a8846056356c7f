"""A client of the job server's queryable state (``job.serve``), over HTTP with httpx."""

from __future__ import annotations

import base64
import json
import math
import pickle
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from lockgate._errors import LockgateError

#: The most requests :meth:`QueryableStateClient.get_many` has in flight: a busy job's server paces
#: its answers anyway, and a thousand keys must not open a thousand connections.
MAX_IN_FLIGHT = 8


def _json_key(key: Any) -> str | None:
    """``key`` as the server's ``key=`` JSON (tuples as arrays), or None if JSON cannot carry it as
    the same key."""
    if key is None or isinstance(key, (bool, str)):
        return json.dumps(key)
    if type(key) is int or (type(key) is float and math.isfinite(key)):
        return json.dumps(key)
    if type(key) is tuple:
        parts = [_json_key(item) for item in key]
        return None if None in parts else "[" + ",".join(p for p in parts if p is not None) + "]"
    return None


class QueryableStateClient:
    """Reads the queryable state of a job served by :meth:`Job.serve`.

    Keys JSON carries the same (str, int, float, bool, None, tuples of those) go as ``key=<JSON>``;
    others as ``key_b64=`` (their pickle, which the server accepts only when it has a token). Values
    come back as JSON made them: tuples as lists, dicts with other keys than str as
    ``{"$entries": [[key, value], ...]}``, objects as ``{"$repr": ...}``.

    Args:
        url: The server's URL (``server.url``).
        token: The server's token, if it has one.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers)

    def __repr__(self) -> str:
        return f"<QueryableStateClient {self.url}>"

    async def get(self, name: str, key: Any) -> Any:
        """The value of queryable state ``name`` for ``key``; None if the key has none.

        Raises:
            LockgateError: The server refused (unknown state, bad key, token, job restarting or
                ended); the message is the server's.
        """
        encoded = _json_key(key)
        if encoded is not None:
            params = {"key": encoded}
        else:
            params = {"key_b64": base64.urlsafe_b64encode(pickle.dumps(key)).decode("ascii")}
        response = await self._http.get(f"/api/state/{quote(name, safe='')}", params=params)
        if response.status_code == 404 and "key" in response.json():
            return None
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise LockgateError(f"the job server answered {response.status_code}: {message}")
        return response.json()["value"]

    async def get_many(self, name: str, keys: Iterable[Any]) -> list[Any]:
        """The values of ``name`` for each of ``keys`` (None where a key has none), in the keys'
        order, asked concurrently (at most ``MAX_IN_FLIGHT`` requests at once)."""
        keys = list(keys)
        values: list[Any] = [None] * len(keys)
        errors: list[Exception] = []
        limiter = anyio.CapacityLimiter(MAX_IN_FLIGHT)

        async def one(index: int) -> None:
            try:
                async with limiter:
                    values[index] = await self.get(name, keys[index])
            except Exception as exc:  # raised below as it is, not in an exception group
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for index in range(len(keys)):
                group.start_soon(one, index)
        if errors:
            raise errors[0]
        return values

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._http.aclose()

    async def __aenter__(self) -> QueryableStateClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
