"""``memory``: counters in this process.

The embedded default. Limits hold per instance only; select ``redis`` when
several instances must share them. Every call runs without an ``await``
between reading and writing a counter, so on one event loop each is atomic
without a lock.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import attrs

from plugboard.plugins.protection.providers.window import Counter
from plugboard.providers.ratelimit import WindowState

#: Forgotten counters are swept at most this often (seconds), on a later call.
SWEEP_EVERY = 30.0


@attrs.define(frozen=True, kw_only=True)
class MemoryRateLimitConfig:
    """``services.ratelimit: {provider: memory}`` (no options)."""


class MemoryRateLimitStore:
    """The ``memory`` ratelimit provider (see :class:`plugboard.providers.ratelimit.RateLimitStore`).

    :param clock: wall-clock seconds (tests pass their own to step time).
    """

    name = "memory"

    def __init__(self, config: MemoryRateLimitConfig | None = None, app: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or MemoryRateLimitConfig()
        self._clock = clock
        self._windows: dict[str, Counter] = {}
        # key -> (total, expires at)
        self._fixed: dict[str, tuple[int, float]] = {}
        self._sweep_at = 0.0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._windows.clear()
        self._fixed.clear()

    async def check(self) -> None:
        return None

    def _counter(self, key: str, window: float, now: float) -> Counter:
        if now >= self._sweep_at:
            self._sweep(now)
        counter = self._windows.get(key)
        if counter is None or counter.window != window:
            counter = self._windows[key] = Counter(window, bucket=int(now // window))
        return counter

    def _sweep(self, now: float) -> None:
        # Counters whose last hit is two windows old count nothing: drop them,
        # so one-off clients (every IP that ever called) do not pile up.
        self._sweep_at = now + SWEEP_EVERY
        for key in [k for k, c in self._windows.items() if max(c.current_last, c.previous_last) + c.expires_after <= now]:
            del self._windows[key]
        for key in [k for k, (_, until) in self._fixed.items() if until <= now]:
            del self._fixed[key]

    async def hit(self, key: str, *, limit: int, window: float, cost: int = 1) -> WindowState:
        return self.hit_now(key, limit=limit, window=window, cost=cost)

    def hit_now(self, key: str, *, limit: int, window: float, cost: int = 1) -> WindowState:
        """:meth:`hit` without a coroutine: the request limiter calls it on every request."""
        now = self._clock()
        return self._counter(key, window, now).hit(max(int(limit), 1), cost, now)

    async def peek(self, key: str, *, limit: int, window: float) -> WindowState:
        now = self._clock()
        counter = self._windows.get(key)
        if counter is None or counter.window != window:
            return WindowState(allowed=True, remaining=max(int(limit), 1), reset_after=0.0)
        return counter.peek(max(int(limit), 1), now)

    async def incr(self, key: str, amount: int = 1, *, expiry: float) -> int:
        now = self._clock()
        total, until = self._fixed.get(key, (0, 0.0))
        if until <= now:
            total, until = 0, now + expiry
        if amount == 0:
            # A read creates nothing.
            return total
        total += amount
        self._fixed[key] = (total, until)
        return total

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)
        self._fixed.pop(key, None)
