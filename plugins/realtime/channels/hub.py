"""The per-app state of the direct channels: the event history and the open connections.

One :class:`ChannelHub` per app (``app[CHANNELS]``), made when the routes
are built. It chooses the history at start-up (Redis streams when the app
has a Redis client, else memory) and ends every open connection at
shutdown, so long-lived handlers do not hold shutdown for its grace period.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plugboard import keys
from plugboard.plugins.realtime.config import RealtimeConfig
from plugboard.plugins.realtime.history import EventHistory, MemoryHistory, RedisHistory
from plugboard.plugins.realtime.limiter import ConnectionLimiter
from plugboard.providers.pubsub import PubSubOptions

if TYPE_CHECKING:
    from plugboard.plugins.realtime.channels.connection import Connection

__all__ = ["CHANNELS", "ChannelHub"]


class ChannelHub:
    """Direct channels of one app: the history, the open connections, the per-address limiter."""

    def __init__(self, config: RealtimeConfig, limiter: ConnectionLimiter) -> None:
        self.config = config
        self.history: EventHistory | None = None
        self.connections: set[Connection] = set()
        #: The app's :class:`ConnectionLimiter` (pools ``channels.ws`` and ``channels.events``).
        self.limiter = limiter

    async def on_startup(self, app: web.Application) -> None:
        options = self.config.channels
        client = app.get(keys.REDIS)
        if client is not None:
            pubsub_options: Any = getattr(app.get(keys.PUBSUB), "options", None)
            prefix = getattr(pubsub_options, "prefix", PubSubOptions().prefix)
            self.history = RedisHistory(
                client, prefix=prefix, retention=options.retention, max_events=options.retention_max_events
            )
        else:
            self.history = MemoryHistory(
                retention=options.retention,
                max_events=options.retention_max_events,
                max_topics=options.max_retained_topics,
                max_bytes=options.max_retained_bytes,
            )

    async def on_shutdown(self, app: web.Application) -> None:
        connections = list(self.connections)
        await asyncio.gather(*(c.shut_down() for c in connections), return_exceptions=True)


CHANNELS = web.AppKey("plugboard.realtime.channels", ChannelHub)
