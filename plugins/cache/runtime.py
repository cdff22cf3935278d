"""What the cache plugin keeps per app while it runs: the store, the hints, invalidation.

``app[RUNTIME]`` (a :class:`CacheRuntime`) is made in the plugin's lifespan.
Invalidation (:meth:`CacheRuntime.invalidate`) removes the tags from the
store, publishes them on the core's pubsub topic ``cache.invalidate`` so every
instance drops them from its in-process entries (the memory provider, the
Redis provider's local layer), and hands them to the CDN purger. Nothing in it
raises for a backend or CDN failure except where an admin asked
(``invalidateCache``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Iterable

from aiohttp import web

from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.errors import ProviderError
from plugboard.plugins.cache.config import CacheConfig
from plugboard.plugins.cache.policy import Hints
from plugboard.plugins.cache.stats import CacheStats
from plugboard.plugins.cache.tags import check_tags
from plugboard.providers import pubsub

logger = logging.getLogger("plugboard.cache")

TOPIC = "cache.invalidate"


class CacheRuntime:
    def __init__(self, app: web.Application, config: CacheConfig, cache: Any, hints: Hints, purger: Any = None) -> None:
        self.app = app
        self.config = config
        self.cache = cache
        self.hints = hints
        self.purger = purger
        self.instance = uuid.uuid4().hex
        self.response_stats = CacheStats()
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(ready), name="cache-invalidations")
        # Subscribed before the first request: an invalidation published by
        # another instance right after start-up is not missed.
        try:
            await asyncio.wait_for(ready.wait(), 5)
        except asyncio.TimeoutError:
            logger.warning("cache: the invalidation subscription is not confirmed yet")

    async def close(self) -> None:
        if self._listener is not None:
            listener = self._listener
            await cancel_until_done([listener])
            if not listener.cancelled() and listener.exception() is not None:
                # Shutting down: report, never raise.
                logger.error("cache: the invalidation listener had failed", exc_info=listener.exception())

    async def invalidate(self, tags: Iterable[str], *, strict: bool = False) -> int:
        """Remove every entry carrying one of ``tags``, on every instance, and purge the CDN.

        :param strict: raise :class:`ProviderError` when the store failed
            (``invalidateCache``); otherwise log it (a mutation must not fail
            after its change is committed).
        :raises plugboard.plugins.cache.tags.BadTag: a tag with unexpected characters.
        """
        tags = check_tags(tags)
        if not tags:
            return 0
        removed = 0
        try:
            removed = await self.cache.invalidate(tags)
        except ProviderError as e:
            if strict:
                raise
            logger.warning("cache: invalidating %s failed: %s", ", ".join(tags[:10]), e)
        await pubsub.publish(self.app, TOPIC, {"tags": tags, "origin": self.instance}, what="cache invalidation")
        if self.purger is not None:
            self.purger.submit(tags)
        return removed

    async def _listen(self, ready: asyncio.Event) -> None:
        pubsub_provider = self.app.get(keys.PUBSUB)
        if pubsub_provider is None:
            ready.set()
            return
        subscription = pubsub_provider.subscribe(TOPIC)
        try:
            wait_ready = getattr(subscription, "wait_ready", None)
            if wait_ready is not None:
                await wait_ready()
            ready.set()
            async for payload in subscription:
                try:
                    if payload.get("origin") == self.instance:
                        continue
                    tags = check_tags(payload["tags"])
                except (AttributeError, KeyError, TypeError, ValueError):
                    logger.warning("cache: ignored a malformed invalidation on %r", TOPIC)
                    continue
                drop = getattr(self.cache, "drop_local", None)
                if drop is not None:
                    await drop(tags)
        finally:
            ready.set()
            await subscription.close()

    def metrics(self) -> dict[str, dict[str, int]]:
        out = {"response": self.response_stats.as_dict()}
        layers = getattr(self.cache, "layers", None)
        if layers is not None:
            for name, stats in layers().items():
                out[name] = stats.as_dict()
        return out
