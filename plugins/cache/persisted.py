"""Persisted queries (APQ) kept in the cache service: the store behind the core's protocol.

The core speaks automatic persisted queries on every transport
(:mod:`plugboard.graphql.persisted`); this plugin keeps the documents in its
cache service (``services.cache``), under ``pq:<sha256>`` for
``cache.persistedQueries.ttl``. On the ``redis`` provider every instance
finds a document any of them was sent; on ``memory`` each instance asks the
client once. Invalidation never drops them: a document does not go stale.
"""

from __future__ import annotations

from typing import Any

from plugboard.plugins.cache.appkeys import RUNTIME

PREFIX = "pq:"


class CachedPersistedQueries:
    """A :class:`plugboard.graphql.persisted.PersistedQueryStore` on the cache plugin's store."""

    def __init__(self, app: Any, ttl: float) -> None:
        self.app = app
        self.ttl = ttl

    async def load(self, sha256: str) -> str | None:
        value = await self.app[RUNTIME].cache.get(PREFIX + sha256)
        return value.decode() if value is not None else None

    async def save(self, sha256: str, document: str) -> None:
        await self.app[RUNTIME].cache.set(PREFIX + sha256, document.encode(), ttl=self.ttl)
