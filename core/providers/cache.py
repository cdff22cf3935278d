"""The cache provider kind: one key-value cache every plugin shares.

The deployer selects it once in the ``services:`` section (``cache: {provider:
memory}``); the response cache, resolver caches and any plugin use the same
instance through ``app[keys.SERVICES].get("cache")``. Implementations come
from plugins (the cache plugin ships ``memory`` and ``redis``).
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable


@runtime_checkable
class Cache(Protocol):
    """Bytes under string keys, with a time to live and tags for invalidation.

    The implementer's manual:

    - Values are ``bytes``: callers serialise (JSON, msgpack), so an entry
      written by one instance reads the same on another sharing the backend.
    - ``ttl`` is in seconds (float); ``None`` means the provider's default,
      and an entry is never returned after it expired.
    - Tags group entries for invalidation (``Book:42``, ``Book``):
      :meth:`invalidate` removes every entry carrying any of the tags, on
      every instance sharing the backend.
    - A backend outage raises :class:`plugboard.errors.ProviderError`; callers
      treat the cache as a miss and go on.
    - Lifecycle: ``await start()``, ``await close()``, and ``await check()``
      (one round trip; raises when the backend does not answer; ``/readyz``).
    - Optional: a provider whose entries live in this process may also offer
      ``get_now(key)``, :meth:`get` as a plain function; the response cache
      then looks entries up without a coroutine on every request.
    - Optional: a provider with a bounded store may offer ``admits(key)``, a
      plain function: False when storing a value under ``key`` now would
      evict a more useful entry (the ``memory`` provider's full store refuses
      a key missed for the first time). Callers that build a value only to
      store it ask first and skip the work; :meth:`set` still stores.

    Example::

        cache = app[keys.SERVICES].get("cache")
        data = await cache.get("books:first=20")
        if data is None:
            data = json.dumps(await load()).encode()
            await cache.set("books:first=20", data, ttl=60, tags=["Book"])
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when missing or expired."""

    async def set(self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, carrying ``tags``."""

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it was there."""

    async def invalidate(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying any of ``tags``; how many were removed (best effort)."""
