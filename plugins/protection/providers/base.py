"""What both ratelimit providers share: the ``limits`` moving window behind the core's Protocol.

``limits`` (moving window, memory and async Redis) does the counting; this
module maps :class:`plugboard.providers.ratelimit.RateLimitStore` onto it.
``limits`` counts windows in whole seconds, so a window is rounded up to the
next second (never shorter than asked). Storage failures surface as
:class:`plugboard.errors.ProviderError`, as the Protocol requires.
"""

from __future__ import annotations

import math
import time
from typing import Any

import attrs

from limits.errors import StorageError

from plugboard.errors import ProviderError
from plugboard.providers.ratelimit import WindowState


class LimitsStore:
    """A :class:`RateLimitStore` over a ``limits.aio`` storage (set by subclasses in ``start``).

    The moving window is driven through the storage's own primitives
    (``acquire_entry`` / ``get_moving_window``) rather than
    ``MovingWindowRateLimiter``: the limiter derives its storage key from
    the limit and window, and the Protocol's ``reset(key)`` must forget a
    key without knowing either.
    """

    name = "limits"

    def __init__(self) -> None:
        self.storage: Any = None

    def _bind(self, storage: Any) -> None:
        self.storage = storage

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (StorageError, OSError, ConnectionError) as e:
            raise ProviderError(f"ratelimit store ({self.name}) failed: {e}") from e
        except Exception as e:
            # redis-py raises its own hierarchy (ConnectionError, TimeoutError) not derived from OSError.
            if type(e).__module__.startswith(("redis", "limits")):
                raise ProviderError(f"ratelimit store ({self.name}) failed: {e}") from e
            raise

    async def check(self) -> None:
        if not await self._call(self.storage.check()):
            raise ProviderError(f"ratelimit store ({self.name}) is not reachable")

    async def incr(self, key: str, amount: int = 1, *, expiry: float) -> int:
        if amount == 0:
            # A read: ``limits`` would create the key with amount 0; get() does not.
            return int(await self._call(self.storage.get(key)))
        return int(await self._call(self.storage.incr(key, max(math.ceil(expiry), 1), amount)))

    async def hit(self, key: str, *, limit: int, window: float, cost: int = 1) -> WindowState:
        limit, expiry = max(int(limit), 1), max(math.ceil(window), 1)
        if cost > limit:
            # Never admissible; not counted.
            state = await self._window(key, limit, expiry)
            return attrs.evolve(state, allowed=False, remaining=state.remaining, reset_after=state.reset_after or float(expiry))
        allowed = await self._call(self.storage.acquire_entry(key, limit, expiry, cost))
        state = await self._window(key, limit, expiry)
        if allowed:
            return attrs.evolve(state, allowed=True)
        return attrs.evolve(state, allowed=False, reset_after=state.reset_after or 1.0)

    async def peek(self, key: str, *, limit: int, window: float) -> WindowState:
        return await self._window(key, max(int(limit), 1), max(math.ceil(window), 1))

    async def _window(self, key: str, limit: int, expiry: int) -> WindowState:
        start, count = await self._call(self.storage.get_moving_window(key, limit, expiry))
        remaining = max(limit - count, 0)
        # Seconds until the oldest hit in the window leaves it (what frees a hit).
        reset_after = max(start + expiry - time.time(), 0.0) if count else 0.0
        return WindowState(allowed=remaining > 0, remaining=remaining, reset_after=reset_after)

    async def reset(self, key: str) -> None:
        # The moving window's entries and the fixed-window counter both live
        # under the key itself (memory: ``events``/``storage``, Redis: the
        # prefixed key), so one clear covers both.
        await self._call(self.storage.clear(key))
