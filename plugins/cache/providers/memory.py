"""``memory``: an in-process LRU bounded by entries and by bytes, with TTL and tags.

Also the local layer of the ``redis`` provider's multi-level mode. Every
operation is synchronous under the hood (one event loop, no awaits inside),
so there are no locks.

Admission: once the store is full, storing an entry evicts another. A full
store admits a key only when it was missed before (:meth:`LRU.admits`,
TinyLFU's doorkeeper; Akamai's "cache on second hit", nginx's
``proxy_cache_min_uses 2``), so a flood of requests that never come again
(a crawler, a client varying its variables) neither evicts the entries that
are asked for again nor pays for storing an entry each. Callers that build
a value only to store it ask first (the response cache and ``@cached`` do);
:meth:`LRU.set` itself always stores.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Iterable

import attrs

from plugboard import validators
from plugboard.plugins.cache.stats import CacheStats
from plugboard.units import Duration, Size


@attrs.define(frozen=True, kw_only=True)
class MemoryCacheConfig:
    """``services.cache: {provider: memory, ...}``."""

    max_entries: int = attrs.field(default=10_000, validator=validators.positive)
    max_bytes: Size = attrs.field(default=64 * 1024 * 1024, validator=validators.positive)
    #: An entry larger than this is not stored.
    max_entry_size: Size = attrs.field(default=1024 * 1024, validator=validators.positive)
    #: TTL of entries stored without one.
    ttl: Duration = attrs.field(default=3600.0, validator=validators.positive)


class Doorkeeper:
    """Which keys were noted lately, approximately: a Bloom filter with a byte per slot, emptied every ``capacity`` keys.

    About 8 slots per key and two probes: a key never noted passes for a
    noted one about 2% of the time (it is then stored on its first miss, as
    without admission). Emptying it now and then keeps "lately" recent and
    the memory fixed (128 KB for 10,000 entries).
    """

    def __init__(self, capacity: int) -> None:
        # At least 128 keys however small the store: a store of one entry
        # still needs to remember the key it turned away until it comes back.
        self.capacity = min(max(capacity, 128), 1 << 19)
        size = 1 << (self.capacity * 8 - 1).bit_length()
        self._mask = size - 1
        self._slots = bytearray(size)
        self._noted = 0

    def seen(self, key: str) -> bool:
        """True when ``key`` was noted since the filter was last emptied; otherwise note it and answer False."""
        h = hash(key)
        a, b = h & self._mask, (h >> 32) & self._mask
        slots = self._slots
        if slots[a] and slots[b]:
            return True
        if self._noted >= self.capacity:
            slots = self._slots = bytearray(len(slots))
            self._noted = 0
        slots[a] = slots[b] = 1
        self._noted += 1
        return False


class LRU:
    """The store itself, shared by :class:`MemoryCache` and the Redis provider's local layer."""

    def __init__(self, *, max_entries: int, max_bytes: int, max_entry_size: int, ttl: float, stats: CacheStats) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_size = min(max_entry_size, max_bytes)
        self.ttl = ttl
        self.stats = stats
        # key -> (value, expires at (monotonic), its tags)
        self._entries: OrderedDict[str, tuple[bytes, float, frozenset[str]]] = OrderedDict()
        # The tag index in two steps: entries with equal tags share one group
        # (a tag set -> its keys), and each tag lists the groups that carry it.
        # Responses of one query shape mostly carry equal tags (a list tag and
        # the same entities), so storing or evicting an entry is one set
        # operation instead of one per tag (38 in bench/cache.py), on sets
        # that grow to every entry of a popular tag. Entries keep the group's
        # own frozenset, not their copy: one set per group in memory, and
        # none per entry for the garbage collector to walk.
        self._groups: dict[frozenset[str], tuple[frozenset[str], set[str]]] = {}
        self._tags: dict[str, set[frozenset[str]]] = {}
        self.bytes = 0
        self._doorkeeper = Doorkeeper(max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        if entry[1] <= time.monotonic():
            self._remove(key)
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry[0]

    def admits(self, key: str) -> bool:
        """Whether storing ``key`` is worth it now: always while the store has room; once full, only for a key missed before.

        Full: at ``max_entries``, or one more entry of the average size would
        pass ``max_bytes``. A refusal notes the key, so its next miss is
        admitted, and counts in ``stats.not_admitted``.
        """
        entries = len(self._entries)
        if entries < self.max_entries and self.bytes * (entries + 1) <= self.max_bytes * entries:
            return True
        if self._doorkeeper.seen(key):
            return True
        self.stats.not_admitted += 1
        return False

    def set(self, key: str, value: bytes, ttl: float | None, tags: Iterable[str]) -> bool:
        if len(value) > self.max_entry_size:
            self.stats.too_large += 1
            self._remove(key)
            return False
        ttl = self.ttl if ttl is None else ttl
        if ttl <= 0:
            self._remove(key)
            return False
        if key in self._entries:
            self._remove(key)
        group = tags if isinstance(tags, frozenset) else frozenset(tags)
        found = self._groups.get(group)
        if found is None:
            found = self._groups[group] = (group, set())
            index = self._tags
            for tag in group:
                try:
                    index[tag].add(group)
                except KeyError:
                    index[tag] = {group}
        group, keys = found
        keys.add(key)
        self._entries[key] = (value, time.monotonic() + ttl, group)
        self.bytes += len(value)
        self.stats.stores += 1
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.stats.evictions += 1
        return True

    def delete(self, key: str) -> bool:
        return self._remove(key)

    def invalidate(self, tags: Iterable[str]) -> int:
        removed = 0
        for tag in tags:
            for group in self._tags.pop(tag, ()):
                found = self._groups.get(group)
                for key in list(found[1]) if found is not None else ():
                    if self._remove(key):
                        removed += 1
        self.stats.invalidations += removed
        return removed

    def clear(self) -> None:
        self._entries.clear()
        self._groups.clear()
        self._tags.clear()
        self.bytes = 0

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= len(entry[0])
        group = entry[2]
        found = self._groups.get(group)
        if found is not None:
            keys = found[1]
            keys.discard(key)
            if keys:
                return True
            del self._groups[group]
        index = self._tags
        for tag in group:
            groups = index.get(tag)
            if groups is not None:
                groups.discard(group)
                if not groups:
                    del index[tag]
        return True


class MemoryCache:
    """The ``memory`` cache provider (see :class:`plugboard.providers.cache.Cache`).

    Not shared between processes: the cache plugin publishes invalidations
    on the core's pubsub so every instance drops the same tags.
    """

    def __init__(self, config: MemoryCacheConfig | None = None) -> None:
        config = config or MemoryCacheConfig()
        self.config = config
        self.stats = CacheStats()
        self._lru = LRU(
            max_entries=config.max_entries,
            max_bytes=config.max_bytes,
            max_entry_size=config.max_entry_size,
            ttl=config.ttl,
            stats=self.stats,
        )

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        return self._lru.bytes

    async def start(self) -> None:
        """Nothing to connect: the store is this process's memory."""

    async def close(self) -> None:
        self._lru.clear()

    async def check(self) -> None:
        """Always ready: there is no backend that could stop answering."""

    async def get(self, key: str) -> bytes | None:
        return self._lru.get(key)

    def get_now(self, key: str) -> bytes | None:
        """:meth:`get` without a coroutine: the store is in this process (see the Cache Protocol)."""
        return self._lru.get(key)

    def admits(self, key: str) -> bool:
        """Whether a value for ``key`` would be worth storing now (see the Cache Protocol and :meth:`LRU.admits`)."""
        return self._lru.admits(key)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()) -> None:
        self._lru.set(key, value, ttl, tags)

    async def delete(self, key: str) -> bool:
        return self._lru.delete(key)

    async def invalidate(self, tags: Iterable[str]) -> int:
        return self._lru.invalidate(tags)

    async def drop_local(self, tags: Iterable[str]) -> int:
        """Another instance invalidated ``tags``: this process's entries are the whole store."""
        return self._lru.invalidate(tags)

    def layers(self) -> dict[str, CacheStats]:
        return {"memory": self.stats}
