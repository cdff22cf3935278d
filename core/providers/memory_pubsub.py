"""The ``memory`` pubsub provider: in-process fan-out for a single server process.

Owns the topic -> subscribers registry of one app. Payloads go through JSON
exactly as with the ``redis`` provider (encoded once at publish, decoded per
subscriber), so code tested against ``memory`` behaves the same on Redis.
"""

from __future__ import annotations

from typing import Any

from plugboard.errors import ProviderError
from plugboard.providers.pubsub import Overflow, PubSubOptions
from plugboard.providers.subscriptions import QueueSubscription, check_topic, encode_payload

__all__ = ["MemoryPubSub"]


class MemoryPubSub:
    """The ``PubSub`` protocol within one process.

    ``publish`` hands the event to every current subscriber's queue before
    it returns and never waits for a subscriber. Usable before ``start()``;
    after ``close()`` publishing and subscribing raise :class:`ProviderError`
    until ``start()`` is called again.
    """

    def __init__(self, options: PubSubOptions | None = None) -> None:
        self.options = options or PubSubOptions()
        # Per topic, insertion-ordered (a dict used as an ordered set) so
        # subscribers receive in the order they subscribed.
        self._topics: dict[str, dict[QueueSubscription, None]] = {}
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """End every open subscription; later publish/subscribe calls raise."""
        self._closed = True
        topics, self._topics = self._topics, {}
        for subscribers in topics.values():
            for sub in subscribers:
                sub.end()

    async def check(self) -> None:
        if self._closed:
            raise ProviderError("pubsub: the memory provider is closed")

    async def publish(self, topic: str, payload: Any) -> None:
        """Queue ``payload`` for every current subscriber of ``topic``.

        :raises TypeError: the payload is not JSON-serializable, or the topic is not a str.
        :raises ValueError: the topic is empty.
        :raises ProviderError: the provider is closed.
        """
        check_topic(topic)
        data = encode_payload(payload)
        if self._closed:
            raise ProviderError("pubsub: cannot publish, the memory provider is closed")
        subscribers = self._topics.get(topic)
        if subscribers:
            # A copy: the ``close`` overflow policy removes subscribers mid-loop.
            for sub in list(subscribers):
                sub.deliver(data)

    def subscribe(self, topic: str, *, queue_size: int | None = None, overflow: Overflow | None = None) -> QueueSubscription:
        """A new subscription to ``topic``; close it when done (or use ``async with``).

        ``queue_size`` and ``overflow`` override the provider's options for this subscriber.

        :raises ProviderError: the provider is closed.
        """
        check_topic(topic)
        if self._closed:
            raise ProviderError("pubsub: cannot subscribe, the memory provider is closed")
        sub = QueueSubscription(
            topic,
            queue_size=queue_size or self.options.queue_size,
            overflow=overflow or self.options.overflow,
            on_close=self._remove,
        )
        self._topics.setdefault(topic, {})[sub] = None
        return sub

    def subscriber_counts(self) -> dict[str, int]:
        """Open subscriptions per topic (topics without any are absent)."""
        return {topic: len(subs) for topic, subs in self._topics.items()}

    def _remove(self, sub: QueueSubscription) -> None:
        subscribers = self._topics.get(sub.topic)
        if subscribers is None:
            return
        subscribers.pop(sub, None)
        if not subscribers:
            del self._topics[sub.topic]
