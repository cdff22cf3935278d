"""The subscription object both pubsub providers hand out, and their shared payload rules.

Owns the per-subscriber queue (a :class:`~plugboard.boundedqueue.BoundedQueue`,
with its overflow policy) and payload encoding, so that the ``memory`` and
``redis`` providers behave identically: a provider calls
:meth:`QueueSubscription.deliver` with the payload's JSON text (never
blocking), the subscriber iterates decoded payloads. Decoding happens per
subscriber, so each gets its own objects and cannot mutate another's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from plugboard.boundedqueue import BoundedQueue, Overflow

__all__ = ["QueueSubscription", "encode_payload", "check_topic", "DEFAULT_READY_TIMEOUT"]

logger = logging.getLogger("plugboard.pubsub")

#: How long ``async with pubsub.subscribe(t)`` waits for the backend to confirm.
DEFAULT_READY_TIMEOUT = 5.0


def check_topic(topic: object) -> str:
    """``topic`` if it is a usable topic name.

    :raises TypeError: not a string.
    :raises ValueError: empty.
    """
    if not isinstance(topic, str):
        raise TypeError(f"pubsub topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("pubsub topic must not be empty")
    return topic


#: ``json.dumps`` with options builds a new encoder on every call; a worker publishes twice per job.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def encode_payload(payload: Any) -> str:
    """The JSON text of ``payload``, as every provider sends it.

    Strict JSON: NaN/Infinity and circular structures are refused like any
    other non-JSON value, so a payload that works with ``memory`` works with
    ``redis`` (and with any non-Python subscriber of the Redis channel).

    :raises TypeError: ``payload`` is not JSON-serializable.
    """
    try:
        return _encode(payload)
    except (TypeError, ValueError) as e:
        raise TypeError(f"pubsub payload is not JSON-serializable: {e}") from None


class QueueSubscription(BoundedQueue[str | bytes]):
    """One subscriber's bounded queue of payloads for one topic (the ``Subscription`` protocol).

    Iterate with ``async for payload in sub``; iteration ends when the
    subscription is closed by :meth:`close`, by the provider's ``close()``,
    or by the ``close`` overflow policy (then :attr:`overflowed` is True).
    Closing discards what is still queued. ``async with`` waits (bounded)
    until the backend confirmed the subscription and closes it on exit.

    Overflow, when ``queue_size`` payloads are waiting and another arrives:

    - ``drop_oldest``: the oldest queued payload is discarded and
      :attr:`dropped` incremented; a warning is logged at most once per
      second per subscription.
    - ``close``: the subscription ends at once (queued payloads are
      discarded) with :attr:`overflowed` set, so the transport can close the
      client's connection with a clear reason.
    """

    __slots__ = ("topic", "_wakeup", "_closed", "_on_close", "_ready")

    def __init__(
        self,
        topic: str,
        *,
        queue_size: int,
        overflow: Overflow,
        on_close: Callable[["QueueSubscription"], None] | None = None,
        ready: Callable[["QueueSubscription", float], Awaitable[bool]] | None = None,
    ) -> None:
        super().__init__(queue_size, overflow)
        self.topic = topic
        self._wakeup = asyncio.Event()
        self._closed = False
        self._on_close = on_close
        self._ready = ready

    @property
    def closed(self) -> bool:
        """True once the subscription no longer receives (its iteration ends)."""
        return self._closed

    @property
    def pending(self) -> int:
        """Payloads queued and not yet taken by the subscriber."""
        return len(self._items)

    # -- provider side -------------------------------------------------------

    def deliver(self, data: str | bytes) -> None:
        """Queue one payload's JSON text; never blocks (for providers)."""
        if self._closed:
            return
        if not self.offer(data):
            self._end()
            self._detach()
            return
        self._wakeup.set()

    def _log_dropped(self) -> None:
        logger.warning(
            "pubsub: subscriber of %r is too slow; dropped its oldest event (%d dropped so far, queue_size=%d)",
            self.topic,
            self.dropped,
            self.limit,
        )

    def _log_closed(self) -> None:
        logger.warning(
            "pubsub: subscriber of %r fell %d events behind; closed (overflow policy 'close')", self.topic, self.limit
        )

    def end(self) -> None:
        """End the subscription without telling the provider (its registry is being cleared)."""
        self._on_close = None
        self._end()

    def _end(self) -> None:
        self._closed = True
        self._items.clear()
        # Wakes every waiting __anext__, which then sees _closed.
        self._wakeup.set()

    def _detach(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    # -- subscriber side -----------------------------------------------------

    async def close(self) -> None:
        """Stop receiving; free the queue. Idempotent."""
        self._end()
        self._detach()

    async def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> bool:
        """Wait until events published from now on reach this subscription.

        True once the backend confirmed it; False when it is closed, the
        backend is unreachable right now (the provider resubscribes when it
        is back), or ``timeout`` seconds passed. Never raises for those.
        """
        if self._closed:
            return False
        if self._ready is None:
            return True
        return await self._ready(self, timeout)

    def __aiter__(self) -> "QueueSubscription":
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._items:
                data = self._items.pop(0)
                try:
                    return json.loads(data)
                except ValueError:
                    # Only a foreign publisher on a shared Redis channel can
                    # cause this; skipping keeps the subscriber's stream alive.
                    logger.warning("pubsub: ignored a non-JSON event on %r", self.topic)
                    continue
            self._wakeup.clear()
            await self._wakeup.wait()

    async def __aenter__(self) -> "QueueSubscription":
        await self.wait_ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "overflowed" if self.overflowed else "closed" if self._closed else "open"
        return f"<QueueSubscription {self.topic!r} {state} pending={len(self._items)} dropped={self.dropped}>"
