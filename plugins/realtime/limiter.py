"""Open connections per client address: the one limiter of every realtime endpoint.

This module owns the per-IP connection count that GraphQL over WebSocket,
GraphQL over SSE (distinct streams and single connection reservations alike)
and the direct channels (``/events``, ``/ws``) apply. One
:class:`ConnectionLimiter` per app (``app[CONNECTION_LIMITER]``) keeps a
count per ``(pool, address)``; each endpoint names its pool and its limit.
Acquire before the first ``await`` of a handshake, so concurrent handshakes
from one address cannot all slip under the limit, and release once in a
``finally``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from plugboard.plugins.realtime.config import RealtimeConfig

__all__ = ["CONNECTION_LIMITER", "ConnectionLimiter", "client_address"]

#: Pools, and the setting that limits each.
WEBSOCKET = "websocket"  # GraphQL over WebSocket: realtime.websocket.max_connections_per_ip
SSE = "sse"  # GraphQL over SSE, both modes: realtime.sse.max_connections_per_ip
CHANNELS_WS = "channels.ws"  # direct channels' /ws: realtime.websocket.max_connections_per_ip
CHANNELS_EVENTS = "channels.events"  # direct channels' /events: realtime.sse.max_connections_per_ip


class ConnectionLimiter:
    """Open connections per ``(pool, client address)``, each pool with its own limit."""

    __slots__ = ("limits", "_open")

    def __init__(self, limits: dict[str, int]) -> None:
        #: Pool -> the most connections one address may hold open in it.
        self.limits = dict(limits)
        self._open: dict[tuple[str, str], int] = {}

    @classmethod
    def from_config(cls, config: "RealtimeConfig") -> "ConnectionLimiter":
        ws, sse = config.websocket.max_connections_per_ip, config.sse.max_connections_per_ip
        return cls({WEBSOCKET: ws, SSE: sse, CHANNELS_WS: ws, CHANNELS_EVENTS: sse})

    def acquire(self, pool: str, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) at the limit."""
        key = (pool, address)
        count = self._open.get(key, 0)
        if count >= self.limits[pool]:
            return False
        self._open[key] = count + 1
        return True

    def release(self, pool: str, address: str) -> None:
        """Count one connection fewer (call once per successful :meth:`acquire`)."""
        key = (pool, address)
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def count(self, pool: str, address: str) -> int:
        return self._open.get((pool, address), 0)

    def open(self, pool: str | None = None) -> dict[str, int]:
        """Open connections by address, in ``pool`` (or in every pool, summed)."""
        out: dict[str, int] = {}
        for (name, address), count in self._open.items():
            if pool is None or name == pool:
                out[address] = out.get(address, 0) + count
        return out


#: The app's limiter, made by :func:`limiter_of` on first use.
CONNECTION_LIMITER = web.AppKey("plugboard.realtime.connection_limiter", ConnectionLimiter)


def limiter_of(app: web.Application, config: "RealtimeConfig") -> ConnectionLimiter:
    """The app's :class:`ConnectionLimiter`; made the first time an endpoint is set up."""
    limiter = app.get(CONNECTION_LIMITER)
    if limiter is None:
        limiter = app[CONNECTION_LIMITER] = ConnectionLimiter.from_config(config)
    return limiter


def client_address(request: web.Request) -> str:
    """The address connections are counted under (``request.remote``)."""
    return request.remote or "unknown"
