"""The event source of the realtime GraphQL subscriptions: one pubsub topic, decoded.

Presence (``userOnline``), chat (``messageAdded``) and notifications
(``notificationAdded``) read their events through :func:`topic_events`,
which turns "no pubsub running" into a client error rather than a crash.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from aiohttp import web

from plugboard.graphql.errors import GraphQLError
from plugboard.providers import pubsub

__all__ = ["topic_events"]


async def topic_events(
    app: web.Application, topic: str, decode: Callable[[Any], dict[str, Any] | None]
) -> AsyncIterator[dict[str, Any]]:
    """Decoded events of one pubsub topic (the core's :func:`plugboard.providers.pubsub.events`)."""
    try:
        async for event in pubsub.events(app, topic, decode):
            yield event
    except LookupError:
        raise GraphQLError("subscriptions are not available: no pubsub provider is running", "SERVICE_UNAVAILABLE") from None
