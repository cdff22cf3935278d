"""Sending to a direct channel: :func:`publish_event`, and reading what arrives live.

An event is appended to the history first (which gives it its id, so a
client that reconnects can replay it), then published on the pubsub topic
``channels.<topic>`` so every instance delivers it live. The ``channels.``
namespace keeps other features' pubsub topics out of reach of the
direct-channel endpoints.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from plugboard import keys
from plugboard.plugins.realtime.channels.authorization import check_topic
from plugboard.plugins.realtime.channels.hub import CHANNELS
from plugboard.plugins.realtime.history import ChannelEvent

__all__ = ["PUBSUB_NAMESPACE", "encode_data", "live_event", "publish_encoded", "publish_event"]

logger = logging.getLogger("plugboard.realtime.channels")

#: Direct-channel topic ``t`` travels on the pubsub topic ``channels.t``.
PUBSUB_NAMESPACE = "channels."


async def publish_event(app: web.Application, topic: str, data: Any) -> str:
    """Send ``data`` to the direct channel ``topic``, on every instance; returns the event id.

    The event is stored in the history first (so a client that reconnects
    can replay it), then published through ``app[keys.PUBSUB]``. Call it
    from resolvers, tasks or hooks of any plugin. Returns ``""`` and does
    nothing when direct channels are switched off
    (``realtime.channels.enabled: false``). The server is trusted: the
    limits on what clients publish (size, rate) do not apply here; the
    history's caps do.

    :raises ValueError: ``topic`` is not a valid topic name.
    :raises TypeError: ``data`` is not JSON-serializable.
    :raises RuntimeError: the app has not started.
    """
    if app.get(CHANNELS) is None:
        return ""
    check_topic(topic)
    return await publish_encoded(app, topic, data, encode_data(topic, data))


def encode_data(topic: str, data: Any) -> str:
    """The JSON text an event's ``data`` is stored and counted as.

    :raises TypeError: ``data`` is not JSON-serializable.
    """
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"event data for topic {topic!r} is not JSON-serializable: {e}") from None


async def publish_encoded(app: web.Application, topic: str, data: Any, data_json: str) -> str:
    """:func:`publish_event` for a checked topic and ``data`` already encoded by :func:`encode_data`."""
    hub = app.get(CHANNELS)
    if hub is None:
        return ""
    if hub.history is None:
        raise RuntimeError("direct channels are not started: publish_event needs a running app")
    event_id = await hub.history.append(topic, data_json)
    pubsub = app.get(keys.PUBSUB)
    if pubsub is not None:
        await pubsub.publish(PUBSUB_NAMESPACE + topic, {"id": event_id, "topic": topic, "data": data})
    return event_id


def live_event(payload: Any, topic: str) -> ChannelEvent | None:
    """The event a live pubsub payload carries, or None (logged) for a malformed one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or payload.get("topic") != topic:
        # Only a foreign publisher on a shared Redis can send this.
        logger.warning("channels: ignored a malformed event on %r", topic)
        return None
    return ChannelEvent(payload["id"], topic, payload.get("data"))
