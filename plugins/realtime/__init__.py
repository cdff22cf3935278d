"""Real-time: GraphQL subscriptions over WebSocket and SSE, pub/sub, presence, chat, notifications.

The hook implementations are thin: each feature lives in its own module and
is switched by ``realtime.*`` settings (``subscriptions``, ``websockets``,
``serverSentEvents``, ``features.{presence,chat,notifications}``).

Transports: ``ws`` (with ``ws_connection``, ``ws_protocols``, ``ws_messages``)
and ``sse`` (with ``sse_stream``); ``channels/`` for clients that do not
speak GraphQL; ``limiter`` counts connections per client address for all of
them. Features: ``presence``, ``chat``, ``notifications`` (each with its
``.graphql`` file), on ``identity`` (user ids) and ``topics`` (event
sources). The wire protocols are described in ``PROTOCOLS.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl
from plugboard.plugins.realtime import chat, hookspecs, notifications, presence
from plugboard.plugins.realtime.config import RealtimeConfig


@hookimpl
def plugboard_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def plugboard_metrics(app: Any, registry: Any) -> Any:
    from plugboard.plugins.realtime.prometheus import register

    return register(app, registry)


@hookimpl
def plugboard_config_class() -> type:
    return RealtimeConfig


@hookimpl
def plugboard_configure(app: Any, config: RealtimeConfig) -> None:
    from plugboard.plugins.realtime.config import check_moved_pubsub

    check_moved_pubsub(app, config)


def _features(config: RealtimeConfig) -> list[Any]:
    enabled = []
    if config.features.presence:
        enabled.append(presence)
    if config.features.chat:
        enabled.append(chat)
    if config.features.notifications:
        enabled.append(notifications)
    return enabled


@hookimpl
def plugboard_schema(config: RealtimeConfig) -> list[Path]:
    # One .graphql file per feature, beside its module (presence.graphql, ...).
    return [feature.SCHEMA for feature in _features(config)]


@hookimpl
def plugboard_resolvers(config: RealtimeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for feature in _features(config):
        out.update(feature.RESOLVERS)
    return out


@hookimpl
def plugboard_subscriptions(config: RealtimeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for feature in _features(config):
        out.update(feature.SUBSCRIPTIONS)
    return out


@hookimpl
def plugboard_tables(metadata: Any, config: RealtimeConfig) -> None:
    for feature in _features(config):
        define = getattr(feature, "define_tables", None)
        if define is not None:
            define(metadata)


@hookimpl
def plugboard_transports(app: Any, config: RealtimeConfig) -> list[Any]:
    from plugboard.plugins.realtime.sse import SSETransport
    from plugboard.plugins.realtime.ws import WebSocketTransport

    transports: list[Any] = []
    if config.websockets:
        transports.append(WebSocketTransport(app, config))
    if config.server_sent_events:
        transports.append(SSETransport(app, config))
    return transports


@hookimpl
def plugboard_routes(app: Any, config: RealtimeConfig) -> list[Any]:
    routes: list[Any] = []
    if config.server_sent_events:
        from plugboard.plugins.realtime.sse import stream_routes

        routes += stream_routes(app, config)
    if config.channels.enabled:
        from plugboard.plugins.realtime.channels import channel_routes

        routes += channel_routes(app, config)
    return routes


@hookimpl
async def plugboard_lifespan(app: Any, config: RealtimeConfig):
    # The pubsub is the core's (the ``pubsub:`` section), started before this.
    stops = []
    for feature in _features(config):
        start = getattr(feature, "start", None)
        if start is not None:
            stops.append(await start(app, config))
    yield
    for stop in reversed(stops):
        if stop is not None:
            await stop()
