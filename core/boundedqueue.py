"""The bounded queue behind every per-subscriber buffer, and its overflow policy.

This module owns the one rule for a consumer that falls behind, so pubsub
subscriptions, shared subscription streams, SSE streams and direct-channel
streams all behave alike: when ``limit`` items wait and another arrives,
``drop_oldest`` discards the oldest and counts it in ``dropped`` (a warning
at most once a second per queue), ``close`` refuses it and sets
``overflowed`` (the queue is emptied; its owner ends the connection).
Subclasses say how they wait, what "oldest" means and what the log lines
name; the base holds no instance dict, event or task, because thousands of
idle subscribers each own one.
"""

from __future__ import annotations

import time
from typing import Generic, Literal, TypeVar

__all__ = ["OVERFLOW_POLICIES", "BoundedQueue", "Overflow"]

T = TypeVar("T")

#: What happens when a queue is full and another item arrives.
Overflow = Literal["drop_oldest", "close"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_oldest", "close")

# A drop warning per queue at most this often: a stuck consumer under a
# steady stream would otherwise write a log line per event.
WARN_INTERVAL = 1.0
# Shared by every queue that never warned (a float per instance otherwise).
_NEVER = float("-inf")


class BoundedQueue(Generic[T]):
    """At most ``limit`` counted items, oldest first, under an overflow policy.

    :meth:`offer` applies the policy; :meth:`take` removes the next item.
    Subclasses may override :meth:`_count`, :meth:`_add` and :meth:`_evict`
    (to keep uncounted items such as end markers, or another order), and
    :meth:`_log_dropped` / :meth:`_log_closed` to say who fell behind.
    """

    __slots__ = ("limit", "overflow", "dropped", "overflowed", "_items", "_warned_at")

    def __init__(self, limit: int, overflow: Overflow = "drop_oldest") -> None:
        if limit < 1:
            raise ValueError("queue_size must be at least 1")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"unknown overflow policy {overflow!r}; expected 'drop_oldest' or 'close'")
        self.limit = limit
        self.overflow = overflow
        #: Items discarded because the consumer fell ``limit`` behind (``drop_oldest``).
        self.dropped = 0
        #: True once an item was refused under ``close``: the owner ends the consumer.
        self.overflowed = False
        # A list, not a deque: it is nearly always empty, and an empty deque
        # costs ~600 bytes per idle subscriber.
        self._items: list[T] = []
        self._warned_at = _NEVER

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> bool:
        """Queue ``item`` (never blocks); False when refused because the queue overflowed under ``close``."""
        if self.overflowed:
            return False
        if self._count() >= self.limit:
            if self.overflow == "close":
                self.overflowed = True
                self._items.clear()
                self._log_closed()
                return False
            self._evict()
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                self._log_dropped()
        self._add(item)
        return True

    def take(self) -> T:
        """Remove and return the next item. :raises IndexError: the queue is empty."""
        return self._items.pop(0)

    def clear(self) -> None:
        self._items.clear()

    # -- what subclasses may change ------------------------------------------

    def _count(self) -> int:
        """Items that count towards ``limit``."""
        return len(self._items)

    def _add(self, item: T) -> None:
        self._items.append(item)

    def _evict(self) -> None:
        del self._items[0]

    def _log_dropped(self) -> None:
        """Say that the consumer fell behind (called at most once a second)."""

    def _log_closed(self) -> None:
        """Say that the consumer was closed for falling behind."""
