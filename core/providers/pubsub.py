"""The pubsub provider kind: the one channel every plugin publishes events through.

The core selects the app's pubsub once, from the ``services.pubsub`` setting
(``memory`` by default, ``redis`` for several instances), starts it before
any plugin and keeps it on the app as ``app[plugboard.keys.PUBSUB]``, whether
or not a plugin consumes events. Publish and consume with the two helpers
here rather than by hand::

    await publish(app, "books.updated.42", {"id": "42"})      # never raises
    async for event in events(app, "books.updated.42", decode=Book.from_dict):
        ...

Implementations are declared with ``ProviderSpec(kind="pubsub", name=...)``
and built with :class:`PubSubOptions`.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable, Mapping, Protocol, TypeVar, runtime_checkable

import attrs

from plugboard import validators
from plugboard.boundedqueue import Overflow as _Overflow

logger = logging.getLogger("plugboard.pubsub")

T = TypeVar("T")

#: What happens when a subscriber's queue is full (see :mod:`plugboard.boundedqueue`).
Overflow = _Overflow


@attrs.define(frozen=True, kw_only=True)
class PubSubOptions:
    """Options of the ``memory`` and ``redis`` pubsub providers (``pubsub:`` in settings)."""

    #: Events queued per subscriber before the overflow policy applies.
    queue_size: int = attrs.field(default=256, validator=validators.positive)
    #: ``drop_oldest``: drop and count; ``close``: end the subscription.
    overflow: Overflow = "drop_oldest"
    #: Prefix of Redis channel names, so several apps can share one Redis.
    prefix: str = "plugboard:"


@runtime_checkable
class Subscription(Protocol):
    """One subscriber's stream of payloads for one topic.

    Iterate it with ``async for payload in subscription``; the iteration
    ends when the subscription is closed (by the subscriber or, under the
    ``close`` overflow policy, because the subscriber fell too far behind).
    A subscriber's queue is bounded: a slow subscriber never blocks the
    publisher or other subscribers. Under ``drop_oldest`` the oldest queued
    payloads are dropped and counted in :attr:`dropped`.
    """

    topic: str
    #: Payloads dropped for this subscriber because its queue was full.
    dropped: int
    #: True once closed because it overflowed (the ``close`` policy).
    overflowed: bool

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None:
        """Stop receiving; free the queue. Idempotent."""


@runtime_checkable
class PubSub(Protocol):
    """Publish JSON-compatible payloads to topics; subscribe to topics.

    Topics are dot-separated strings (``chat.42``, ``books.updated.7``).
    ``publish`` returns once the event is handed to the backend; delivery
    to subscribers on every instance sharing the backend follows. Payloads
    must be JSON-serializable: the Redis implementation sends them as JSON,
    and the memory one must behave the same.

    Lifecycle: ``await start()`` before use, ``await close()`` at shutdown
    (ends every open subscription). ``await check()`` raises when the
    backend does not answer (used by ``/readyz``).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def publish(self, topic: str, payload: Any) -> None:
        """Deliver ``payload`` to every current subscriber of ``topic``."""

    def subscribe(self, topic: str, *, queue_size: int | None = None, overflow: Overflow | None = None) -> Subscription:
        """A new subscription to ``topic``; close it when done (or use ``async with``).

        ``queue_size`` and ``overflow`` override the provider's options for this
        one subscriber (a transport that writes straight from the queue).
        """


async def publish(app: Mapping[Any, Any], topic: str, payload: Any, *, what: str = "event") -> bool:
    """Publish ``payload`` on the app's pubsub; log and return False when that fails.

    For events whose loss must not fail the caller: the change they announce
    is already stored (a chat message, a job's state), and a subscriber that
    reconnects reads it from there. ``what`` names the event in the log line.
    """
    from plugboard import keys

    pubsub = app.get(keys.PUBSUB)
    if pubsub is None:
        return False
    try:
        await pubsub.publish(topic, payload)
    except Exception as e:  # the caller's change is stored; only live delivery is lost
        logger.warning("pubsub: %s on %r not published: %s", what, topic, e)
        return False
    return True


async def events(
    app: Mapping[Any, Any], topic: str, decode: Callable[[Any], T | None] = lambda payload: payload
) -> AsyncIterator[T]:
    """The decoded events of ``topic``; payloads ``decode`` rejects are logged and skipped.

    ``decode`` returns None, or raises ``KeyError``/``TypeError``/``ValueError``,
    for a malformed payload (only a foreign publisher on a shared Redis can
    send one). The subscription is closed when the consumer stops iterating.

    :raises LookupError: no pubsub runs on ``app``.
    """
    from plugboard import keys

    pubsub = app.get(keys.PUBSUB)
    if pubsub is None:
        raise LookupError("no pubsub provider is running")
    subscription = pubsub.subscribe(topic)
    try:
        async for payload in subscription:
            try:
                event = decode(payload)
            except (KeyError, TypeError, ValueError):
                event = None
            if event is None:
                logger.warning("pubsub: ignored a malformed event on %r", topic)
                continue
            yield event
    finally:
        await subscription.close()
