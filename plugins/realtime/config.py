"""``realtime:`` settings — the seed's RealtimeConfig plus the limits a server needs."""

from __future__ import annotations

import logging
from typing import Any, Literal

import attrs

from plugboard import keys
from plugboard.boundedqueue import Overflow
from plugboard.errors import ConfigError, ConfigProblem

from plugboard.units import Duration, Size
from plugboard import validators


@attrs.define(frozen=True, kw_only=True)
class Features:
    presence: bool = True
    chat: bool = True
    notifications: bool = True


@attrs.define(frozen=True, kw_only=True)
class WebSocketOptions:
    #: Server pings this often; a client silent for two intervals is dropped.
    keepalive: Duration = attrs.field(default=12.0, validator=validators.positive)
    #: graphql-transport-ws: close 4408 if connection_init does not come in time.
    init_timeout: Duration = attrs.field(default=3.0, validator=validators.positive)
    #: Open WebSockets per client address (GraphQL, and direct channels' /ws, each counted apart).
    max_connections_per_ip: int = attrs.field(default=100, validator=validators.positive)
    max_subscriptions_per_connection: int = attrs.field(default=100, validator=validators.positive)
    max_message_size: Size = attrs.field(default=64 * 1024, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class SSEOptions:
    #: A comment line this often keeps proxies from closing idle streams.
    keepalive: Duration = attrs.field(default=15.0, validator=validators.positive)
    #: Open or reserved GraphQL event streams per client address, both modes
    #: together (and direct channels' /events streams, counted apart).
    max_connections_per_ip: int = attrs.field(default=100, validator=validators.positive)
    #: graphql-sse's own path (its handler's and docs' default), served besides
    #: the GraphQL path with ``Accept: text/event-stream``; both modes. Unset:
    #: ``<graphql.path>/stream``.
    path: str | None = attrs.field(default=None, validator=attrs.validators.optional(validators.url_path))

    def stream_path(self, graphql_path: str) -> str:
        return self.path or graphql_path.rstrip("/") + "/stream"


@attrs.define(frozen=True, kw_only=True)
class ChannelOptions:
    """Direct channels for clients that do not speak GraphQL."""

    enabled: bool = True
    events_path: str = attrs.field(default="/events", validator=validators.url_path)
    ws_path: str = attrs.field(default="/ws", validator=validators.url_path)
    #: How far back a reconnecting client (Last-Event-ID) can catch up.
    retention: Duration = attrs.field(default=300.0, validator=validators.positive)
    retention_max_events: int = attrs.field(default=1000, validator=validators.positive)
    #: Who may publish from ``/ws`` when no ``plugboard_channel_authorize``
    #: implementation decides, to a topic the default rule lets them read:
    #: ``signed_in`` (clients with an identity), ``anyone`` (anonymous clients
    #: too) or ``nobody`` (only the server, through ``publish_event``).
    publish: Literal["signed_in", "anyone", "nobody"] = "signed_in"
    #: Largest ``data`` a client may publish, measured as its JSON (UTF-8).
    max_payload_size: Size = attrs.field(default=16 * 1024, validator=validators.positive)
    #: Publishes one ``/ws`` connection may make per second (a burst of as many).
    publish_rate: int = attrs.field(default=10, validator=validators.positive)
    #: Memory history: topics kept for replay; past it, the topic published to
    #: least recently is forgotten.
    max_retained_topics: int = attrs.field(default=10_000, validator=validators.positive)
    #: Memory history: what retained events may hold in all (their JSON plus
    #: the bookkeeping per event and per topic); past it, the topics published
    #: to least recently lose their oldest events first.
    max_retained_bytes: Size = attrs.field(default=8 * 1024 * 1024, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class PresenceOptions:
    #: A user with no heartbeat for this long is offline.
    ttl: Duration = attrs.field(default=60.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class RealtimeConfig:
    subscriptions: bool = True
    websockets: bool = True
    server_sent_events: bool = True
    features: Features = Features()
    #: Moved to the core's ``services.pubsub`` section; accepted for one release when it
    #: names the provider that section selects (see :func:`check_moved_pubsub`).
    pubsub: str | None = None
    #: Events queued per SSE stream or direct-channel client before the overflow policy applies.
    queue_size: int = attrs.field(default=256, validator=validators.positive)
    #: ``drop_oldest`` (count what was dropped) or ``close`` (close the
    #: subscriber: WebSocket 4429-style close / SSE stream end).
    overflow: Overflow = "drop_oldest"
    websocket: WebSocketOptions = WebSocketOptions()
    sse: SSEOptions = SSEOptions()
    channels: ChannelOptions = ChannelOptions()
    presence: PresenceOptions = PresenceOptions()


def check_moved_pubsub(app: Any, config: RealtimeConfig) -> None:
    """``realtime.pubsub`` moved to the core's ``services.pubsub`` section.

    Still accepted, with a deprecation warning, when it names the provider the
    core already selects; otherwise start-up stops saying what to write.
    """
    if config.pubsub is None:
        return
    selected = app[keys.SERVICES].provider("pubsub")
    if config.pubsub == selected:
        logging.getLogger("plugboard").warning(
            "realtime.pubsub is deprecated and will be removed: the core's services section selects the pubsub "
            "(services: {pubsub: {provider: %s}} is in effect); remove realtime.pubsub",
            selected,
        )
        return
    source = app[keys.SETTINGS].source("realtime.pubsub")
    raise ConfigError(
        [
            ConfigProblem(
                "realtime.pubsub",
                config.pubsub,
                f"moved to the core: write `services: {{pubsub: {{provider: {config.pubsub}}}}}` and remove realtime.pubsub",
                source,
            )
        ]
    )
