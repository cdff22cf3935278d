"""Counters per cache provider: hits, misses, stores, evictions, invalidations, errors.

Every provider the cache plugin ships keeps one :class:`CacheStats`;
``plugboard.plugins.cache.metrics(app)`` reads them all, for the protection
plugin's ``/metrics`` (or any exporter): plain integers, no client library.
"""

from __future__ import annotations

import attrs


@attrs.define
class CacheStats:
    """Monotonic counters of one provider (``layer`` tells the Redis provider's local layer apart)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    #: Entries dropped to stay within the entry or byte bounds (not expiry).
    evictions: int = 0
    #: Entries removed by tag invalidation.
    invalidations: int = 0
    #: Backend failures (Redis unreachable, timed out); each one served uncached.
    errors: int = 0
    #: Entries refused because they were larger than the entry limit.
    too_large: int = 0
    #: Values not stored because the store was full and their key was
    #: missed for the first time (admission, :meth:`..providers.memory.LRU.admits`).
    not_admitted: int = 0
    #: Response-cache misses answered by waiting for another request's
    #: computation of the same key (in this process or on another instance).
    waits: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)
