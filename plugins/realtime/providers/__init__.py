"""The real-time plugin's pubsub providers: ``memory`` and ``redis``."""

from __future__ import annotations

from typing import Literal

import attrs

from plugboard.providers.registry import ProviderSpec


@attrs.define(frozen=True, kw_only=True)
class PubSubOptions:
    """What every pubsub implementation here is built with."""

    #: Events queued per subscriber before the overflow policy applies.
    queue_size: int = 256
    #: ``drop_oldest``: drop and count; ``close``: end the subscription.
    overflow: Literal["drop_oldest", "close"] = "drop_oldest"
    #: Prefix of Redis channel / stream names, so several apps can share one Redis.
    prefix: str = "plugboard:"


PROVIDER_SPECS = (
    ProviderSpec(
        kind="pubsub",
        name="memory",
        factory="plugboard.plugins.realtime.providers.memory:MemoryPubSub",
        config=PubSubOptions,
        description="in-process fan-out (one server process)",
    ),
    ProviderSpec(
        kind="pubsub",
        name="redis",
        factory="plugboard.plugins.realtime.providers.redis:RedisPubSub",
        config=PubSubOptions,
        requires="redis",
        description="Redis pub/sub through the shared redis.url client (several instances)",
    ),
)
