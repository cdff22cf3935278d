"""Direct channels: named topics over plain SSE and JSON WebSocket, with replay.

For clients that do not speak GraphQL: ``GET /events`` (Server-Sent Events)
and ``/ws`` (JSON over WebSocket), and :func:`publish_event`, the function
other plugins call to send to a direct channel. This package wires the
routes; one module per job:

- :mod:`.hub`: per-app state (history, open connections, limiter)
- :mod:`.authorization`: topic names and ``plugboard_channel_authorize``
- :mod:`.publishing`: :func:`publish_event` and live payloads
- :mod:`.connection`: what every connection has, and the errors
- :mod:`.sse_stream`: the ``/events`` endpoint
- :mod:`.ws_client`: the ``/ws`` endpoint

The protocols (event ids, replay, messages, close codes, backpressure) are
described in ``plugins/realtime/PROTOCOLS.md``.
"""

from __future__ import annotations

from aiohttp import web

from plugboard.plugins.realtime.channels.authorization import authorize, check_topic, default_authorization
from plugboard.plugins.realtime.channels.hub import CHANNELS, ChannelHub
from plugboard.plugins.realtime.channels.publishing import PUBSUB_NAMESPACE, publish_event
from plugboard.plugins.realtime.channels.sse_stream import events_handler
from plugboard.plugins.realtime.channels.ws_client import ws_handler
from plugboard.plugins.realtime.config import RealtimeConfig
from plugboard.plugins.realtime.limiter import limiter_of

__all__ = [
    "CHANNELS",
    "PUBSUB_NAMESPACE",
    "ChannelHub",
    "authorize",
    "channel_routes",
    "check_topic",
    "default_authorization",
    "publish_event",
]


def channel_routes(app: web.Application, config: RealtimeConfig) -> list[web.RouteDef]:
    """The ``/events`` and ``/ws`` routes (paths from ``realtime.channels``); sets up the app's hub."""
    hub = app.get(CHANNELS)
    if hub is None:
        hub = ChannelHub(config, limiter_of(app, config))
        app[CHANNELS] = hub
        # on_startup runs after every cleanup context, so Redis and the
        # pubsub are up; on_shutdown runs before the server waits for handlers.
        app.on_startup.append(hub.on_startup)
        app.on_shutdown.append(hub.on_shutdown)
    return [
        web.get(config.channels.events_path, events_handler, allow_head=False),
        web.get(config.channels.ws_path, ws_handler, allow_head=False),
    ]
