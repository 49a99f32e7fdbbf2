"""Upstream bodies shared by every process and host through Redis (`--cache redis://…`).

What it holds, by which key and for how long: the table in gateway/loaders/rest/__init__.py.
Each body is stored with how long Redis keeps it, so that its age is Redis's own count (no
clock is compared across hosts): younger than the fetch's `max_age` (`cache_ttl`, less for a
refresh) it is fresh; older, it is served only when the upstream fails (stale-if-error across
processes). A 404 is kept too, as one.

A body that is not fresh is fetched under a short lock (SET NX PX, `LOCK_TTL`, extended while the
fetch lasts): one process fetches, the others poll for the body (every few milliseconds at first,
then every `POLL_CAP` seconds) until it appears fresh, or the lock goes without one (its holder
failed or died), or `wait_limit` passes; then they fetch it themselves. Within a process the
resource cache's single flight already makes one caller per key: a burst of identical cold queries
over many processes costs the upstream one request per resource.

When Redis is unavailable (gateway/caching/shared_cache.py) every step falls back to the plain
fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple
from urllib.parse import urlencode

from gateway.caching.shared_cache import SharedCache
from gateway.errors import SharedCacheUnavailable, UpstreamError
from gateway.loaders.rest.cache import Fetching

LOCK_TTL = 2.0  # seconds a lock lasts unless its holder, still fetching, extends it
POLL_FIRST = 0.005  # seconds before a waiter's first look; doubled up to POLL_CAP
POLL_CAP = 0.05

# A stored body: its lifetime in Redis (milliseconds) and whether the upstream had it (1) or
# answered 404 (0), then the body.
_HEADER = struct.Struct("!QB")

FetchBody = Callable[[], Awaitable[bytes | None]]


class _Copy(NamedTuple):
    """A body as read (None for a 404), its age in seconds, and whether it is a stale copy
    standing in for a failed fetch."""

    body: bytes | None
    age: float
    stale: bool = False


class SharedBodies:
    """Upstream bodies in the shared cache, for one upstream."""

    def __init__(
        self,
        shared: SharedCache,
        upstream_url: str,
        *,
        ttl: float,
        stale: float,
        max_body: int,
        wait_limit: float,
        lock_ttl: float = LOCK_TTL,
    ) -> None:
        self.shared = shared
        self.ttl = ttl
        self.stale = stale
        self.max_body = max_body
        self.wait_limit = wait_limit
        self.lock_ttl = lock_ttl
        # Gateways of different upstreams may share a server: their paths must not meet.
        self._space = "body:" + hashlib.sha256(upstream_url.encode()).hexdigest()[:16] + ":"

    def key(self, path: str, params: Mapping[str, str | int] | None) -> str:
        return self._space + (f"{path}?{urlencode(params)}" if params else path)

    async def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None,
        fetch: FetchBody,
        fetching: Fetching | None = None,
    ) -> bytes | None:
        """The body at `path` with `params`: the shared copy if fresh, else `fetch`'s, shared.

        Raises what `fetch` raises, unless a stale copy can stand in for a failed fetch.
        `fetching`, the resource cache's fetch the body is read for, bounds the age of a fresh
        copy and is told the body's age, and whether it was stale.
        """
        max_age = self.ttl if fetching is None else min(fetching.max_age, self.ttl)
        copy = await self._read_through(self.key(path, params), fetch, max_age)
        if fetching is not None:
            fetching.read(copy.age, stale=copy.stale)
        return copy.body

    async def _read_through(self, key: str, fetch: FetchBody, max_age: float) -> _Copy:
        """The body at `key`: a fresh shared copy, another process's fetch, or `fetch`'s."""
        lock = "lock:" + key
        stale: _Copy | None = None
        token = secrets.token_hex(8)
        taken = False
        try:
            found = await self._read(key)
            if found is not None:
                if found.age <= max_age:
                    return found
                stale, found = found._replace(stale=True), None
            taken = await self.shared.lock(lock, token, self.lock_ttl)
            if not taken:  # another process is fetching it
                found = await self._wait(key, lock, max_age)
        except SharedCacheUnavailable:
            found = None
        if not taken:
            return found if found is not None else await self._fetch(key, fetch, stale)
        keeping = asyncio.ensure_future(self._keep(lock, token))
        try:
            # Another's body may have landed meanwhile.
            with contextlib.suppress(SharedCacheUnavailable):
                found = await self._read(key)
                if found is not None and found.age <= max_age:
                    return found
            return await self._fetch(key, fetch, stale)
        finally:
            keeping.cancel()
            with contextlib.suppress(SharedCacheUnavailable):
                await self.shared.unlock(lock, token)

    async def _read(self, key: str) -> _Copy | None:
        """The stored body at `key`, if any."""
        return _decoded(await self.shared.get(key))

    async def _wait(self, key: str, lock: str, max_age: float) -> _Copy | None:
        """Wait for another process's fetch: its body, or None when it is not coming."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_limit
        delay = POLL_FIRST
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_CAP)
            stored, locked = await self.shared.peek(key, lock)
            found = _decoded(stored)
            if found is not None and found.age <= max_age:
                return found
            if not locked:
                return None
        return None

    async def _fetch(self, key: str, fetch: FetchBody, stale: _Copy | None) -> _Copy:
        """`fetch`'s body, kept for the others; if it fails, the stale copy, if any."""
        try:
            body = await fetch()
        except UpstreamError:
            if stale is None:
                raise
            return stale
        if body is None or len(body) <= self.max_body:
            lifetime = self.ttl + self.stale
            header = _HEADER.pack(round(lifetime * 1000), body is not None)
            with contextlib.suppress(SharedCacheUnavailable):
                await self.shared.set(key, header + (body or b""), lifetime)
        return _Copy(body, 0.0)

    async def _keep(self, lock: str, token: str) -> None:
        """Extend the lock while its fetch lasts, so that waiters know it is still coming."""
        with contextlib.suppress(SharedCacheUnavailable):
            while True:
                await asyncio.sleep(self.lock_ttl / 3)
                if not await self.shared.extend(lock, token, self.lock_ttl):
                    return


def _decoded(stored: tuple[bytes, int] | None) -> _Copy | None:
    if stored is None:
        return None
    value, left = stored
    if len(value) < _HEADER.size or left < 0:
        return None
    lifetime, found = _HEADER.unpack_from(value)
    age = max(0, lifetime - left) / 1000
    return _Copy(value[_HEADER.size :] if found else None, age)
