"""``redis``: entries in the core's shared Redis, optionally behind an in-process layer.

Uses ``app[keys.REDIS]`` (``redis.url``); no second client. Tags are Redis
sets of keys; setting and invalidating run as Lua scripts, so an entry and its
tag memberships change together. Every command is bounded by ``timeout``: a
Redis that is down or slow turns into misses (counted in ``errors``), and for
``retry_after`` seconds after a failure the provider does not even try, so
requests stay fast; the next attempt after that resumes caching by itself.

Stampede lock across instances (:meth:`RedisCache.acquire`,
:meth:`RedisCache.wait`, :meth:`RedisCache.release`): ``SET NX PX`` on a
lock key per entry; the instances that lose poll the entry and the lock in
one ``MGET`` (shared with every other read of that loop turn) until the
entry appears, the lock goes (the holder stored nothing: compute), or the
wait is over (compute anyway).

Multi-level mode (``local: {enabled: true}``): a small LRU in each process in
front of Redis. Its TTL is short, and the cache plugin drops its entries on
every instance when an invalidation is published on the core's pubsub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Iterable

import attrs
import redis.exceptions

from plugboard import keys, validators
from plugboard.errors import ProviderError
from plugboard.plugins.cache.providers.memory import LRU
from plugboard.plugins.cache.stats import CacheStats
from plugboard.units import Duration, Size

logger = logging.getLogger("plugboard.cache")

_SET = """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

_INVALIDATE = """
local removed = 0
for i = 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 500 do
    removed = removed + redis.call('DEL', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('DEL', KEYS[i])
end
return removed
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@attrs.define(frozen=True, kw_only=True)
class LocalLayer:
    """``services.cache.local``: the in-process layer of the multi-level mode."""

    enabled: bool = False
    max_entries: int = attrs.field(default=1000, validator=validators.positive)
    max_bytes: Size = attrs.field(default=16 * 1024 * 1024, validator=validators.positive)
    #: Entries stay at most this long locally (and never beyond their own TTL).
    ttl: Duration = attrs.field(default=5.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class RedisCacheConfig:
    """``services.cache: {provider: redis, ...}`` (the server is ``redis.url``)."""

    prefix: str = "plugboard:cache:"
    #: TTL of entries stored without one.
    ttl: Duration = attrs.field(default=3600.0, validator=validators.positive)
    max_entry_size: Size = attrs.field(default=1024 * 1024, validator=validators.positive)
    #: Bound on every Redis command; past it the request goes on uncached.
    timeout: Duration = attrs.field(default=0.25, validator=validators.positive)
    #: After a failure, Redis is not tried again for this long.
    retry_after: Duration = attrs.field(default=1.0, validator=validators.positive)
    local: LocalLayer = attrs.field(factory=LocalLayer)


class RedisCache:
    """The ``redis`` cache provider (see :class:`plugboard.providers.cache.Cache`).

    Unlike the Protocol's default, a backend failure does not raise from
    ``get``/``set``: it is logged once per outage, counted, and the call
    answers as a miss, because every caller would do exactly that.
    ``invalidate`` raises :class:`ProviderError` (an admin must learn that
    it did not happen).
    """

    def __init__(self, config: RedisCacheConfig, app: Any) -> None:
        self.config = config
        self._app = app
        self.client: Any = None
        self.stats = CacheStats()
        self.local_stats = CacheStats()
        self.local: LRU | None = None
        if config.local.enabled:
            self.local = LRU(
                max_entries=config.local.max_entries,
                max_bytes=config.local.max_bytes,
                max_entry_size=config.max_entry_size,
                ttl=config.local.ttl,
                stats=self.local_stats,
            )
        self._down_until = 0.0
        self._pending_gets: list[tuple[str, asyncio.Future]] = []
        self._mget_tasks: set[asyncio.Task] = set()
        self._set_script: Any = None
        self._invalidate_script: Any = None
        self._release_script: Any = None
        #: key -> the token of a stampede lock this process holds.
        self._locks: dict[str, str] = {}

    async def start(self) -> None:
        client = self._app.get(keys.REDIS)
        if client is None:
            raise ProviderError("the redis cache provider needs redis.url (or REDIS_URL) to be set")
        self.client = client
        self._set_script = client.register_script(_SET)
        self._invalidate_script = client.register_script(_INVALIDATE)
        self._release_script = client.register_script(_RELEASE)

    async def close(self) -> None:
        # The client is the core's: it closes it.
        if self.local is not None:
            self.local.clear()

    async def check(self) -> None:
        async with asyncio.timeout(max(self.config.timeout, 1.0)):
            await self.client.ping()

    # -- the Protocol ---------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        if self.local is not None:
            value = self.local.get(key)
            if value is not None:
                return value
        if self._is_down():
            self.stats.misses += 1
            return None
        try:
            value = await self._batched_get(self.config.prefix + key)
        except ProviderError:
            self.stats.misses += 1
            return None
        if value is None:
            self.stats.misses += 1
            return None
        return self._accept(key, value)

    def _accept(self, key: str, raw: bytes) -> bytes | None:
        """A value read from Redis: its tags line split off, copied to the local layer; None if malformed."""
        tags_json, sep, value = raw.partition(b"\n")
        if not sep:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        if self.local is not None:
            # The local layer's own TTL bounds the copy; its tags come along so
            # an invalidation published by another instance finds it.
            try:
                tags = json.loads(tags_json)
            except ValueError:
                tags = []
            self.local.set(key, value, None, tags)
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()) -> None:
        if len(value) > self.config.max_entry_size:
            self.stats.too_large += 1
            return
        ttl = self.config.ttl if ttl is None else ttl
        if ttl <= 0:
            return
        tags = list(dict.fromkeys(tags))
        if self.local is not None:
            self.local.set(key, value, min(ttl, self.config.local.ttl), tags)
        if self._is_down():
            return
        prefix = self.config.prefix
        try:
            await self._run(
                self._set_script(keys=[prefix + key, *(f"{prefix}tag:{t}" for t in tags)],
                    # Each value carries its tags (first line): another
                    # instance's local layer needs them to honour invalidations.
                    args=[json.dumps(tags, separators=(",", ":")).encode() + b"\n" + value, max(1, int(ttl * 1000))],
                )
            )
        except ProviderError:
            return
        self.stats.stores += 1

    async def delete(self, key: str) -> bool:
        local = self.local.delete(key) if self.local is not None else False
        try:
            return bool(await self._run(self.client.delete(self.config.prefix + key))) or local
        except ProviderError:
            return local

    async def invalidate(self, tags: Iterable[str]) -> int:
        tags = list(dict.fromkeys(tags))
        if not tags:
            return 0
        if self.local is not None:
            self.local.invalidate(tags)
        prefix = self.config.prefix
        removed = int(await self._run(self._invalidate_script(keys=[f"{prefix}tag:{t}" for t in tags]), force=True))
        self.stats.invalidations += removed
        return removed

    async def drop_local(self, tags: Iterable[str]) -> int:
        """Another instance invalidated ``tags``: drop them from this process's layer (Redis is done)."""
        return self.local.invalidate(tags) if self.local is not None else 0

    def layers(self) -> dict[str, CacheStats]:
        out = {"redis": self.stats}
        if self.local is not None:
            out["local"] = self.local_stats
        return out

    # -- the stampede lock across instances -----------------------------

    async def acquire(self, key: str, ttl: float) -> bool | None:
        """Take the lock on computing ``key`` for at most ``ttl`` seconds.

        True: this process computes; False: another instance does (call
        :meth:`wait`); None: Redis cannot say (down): compute without it.
        """
        if self._is_down():
            return None
        token = uuid.uuid4().hex
        try:
            taken = await self._run(self.client.set(self._lock_key(key), token, nx=True, px=max(1, int(ttl * 1000))))
        except ProviderError:
            return None
        if taken:
            self._locks[key] = token
            return True
        return False

    async def release(self, key: str) -> None:
        """Give up a lock :meth:`acquire` took (only ours: the token must match)."""
        token = self._locks.pop(key, None)
        if token is None:
            return
        try:
            await self._run(self._release_script(keys=[self._lock_key(key)], args=[token]))
        except ProviderError:
            pass  # the lock expires by itself (its ttl)

    async def wait(self, key: str, timeout: float) -> bytes | None:
        """Wait for the instance holding ``key``'s lock to store it; None when it did not (compute then).

        Polls the entry and the lock together (5 ms, doubling to 50 ms):
        the entry is returned as soon as it is there; without it, a lock
        that is gone means the holder stored nothing (an error, an
        uncacheable response) and the caller computes.
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        prefix = self.config.prefix
        while True:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)
            if self._is_down():
                return None
            value, locked = await asyncio.gather(
                self._batched_get(prefix + key), self._batched_get(self._lock_key(key)), return_exceptions=True
            )
            if isinstance(value, BaseException) or isinstance(locked, BaseException):
                return None  # an outage (ProviderError): compute
            if value is not None:
                found = self._accept(key, value)
                if found is not None:
                    return found
            if locked is None or time.monotonic() >= deadline:
                return None

    def _lock_key(self, key: str) -> str:
        return f"{self.config.prefix}lock:{key}"

    # -- reads: one MGET per event-loop turn ----------------------------

    def _batched_get(self, key: str) -> "asyncio.Future[bytes | None]":
        # Concurrent requests each wanting one key share one round trip: under
        # load, redis-py's per-command cost (pool, packing, parsing) is most
        # of a hit's time, and an MGET of n keys costs little more than a GET.
        future = asyncio.get_running_loop().create_future()
        self._pending_gets.append((key, future))
        if len(self._pending_gets) == 1:
            asyncio.get_running_loop().call_soon(self._flush_gets)
        return future

    def _flush_gets(self) -> None:
        batch, self._pending_gets = self._pending_gets, []
        task = asyncio.ensure_future(self._mget(batch))
        self._mget_tasks.add(task)
        task.add_done_callback(self._mget_tasks.discard)

    async def _mget(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            values = await self._run(self.client.mget([k for k, _ in batch]))
        except ProviderError as e:
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), value in zip(batch, values):
            if not future.done():
                future.set_result(value)

    # -- outage handling ------------------------------------------------

    def _is_down(self) -> bool:
        return self._down_until > time.monotonic()

    async def _run(self, awaitable: Any, *, force: bool = False) -> Any:
        if not force and self._is_down():
            awaitable.close()
            raise ProviderError("redis cache: backend marked down")
        try:
            async with asyncio.timeout(self.config.timeout):
                result = await awaitable
        except (redis.exceptions.RedisError, OSError, TimeoutError) as e:
            self.stats.errors += 1
            if not self._is_down():
                logger.warning(
                    "cache: redis unavailable (%s); serving uncached, retrying in %.1fs",
                    type(e).__name__ if isinstance(e, TimeoutError) else e,
                    self.config.retry_after,
                )
            self._down_until = time.monotonic() + self.config.retry_after
            raise ProviderError(f"redis cache: {type(e).__name__}: {e}") from e
        if self._down_until:
            logger.info("cache: redis answers again; caching resumed")
            self._down_until = 0.0
        return result
