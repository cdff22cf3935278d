"""The pubsub provider kind: the one channel every plugin publishes events through.

An implementation is declared with ``ProviderSpec(kind="pubsub", name=...)``
and selected in settings (the real-time plugin ships ``memory`` and
``redis``). While one is running, it is on the app as
``app[plugboard.keys.PUBSUB]``; code that publishes should tolerate its
absence (the feature that would deliver the event is switched off)::

    pubsub = app.get(keys.PUBSUB)
    if pubsub is not None:
        await pubsub.publish("books.updated.42", {"id": "42"})
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, runtime_checkable


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

    def subscribe(self, topic: str) -> Subscription:
        """A new subscription to ``topic``; close it when done (or use ``async with``)."""
