"""The ratelimit provider kind: the counter store behind every rate limit.

The deployer selects it once in the ``services:`` section (``ratelimit:
{provider: memory}``, or ``redis`` so limits hold across instances);
request limits, per-field limits, cost budgets and login throttles all count
in the same store through ``app[keys.SERVICES].get("ratelimit")``.
Implementations come from plugins (the protection plugin ships ``memory``
and ``redis``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs


@attrs.define(frozen=True, kw_only=True)
class WindowState:
    """A counter after a hit: what RateLimit headers and Retry-After need."""

    #: True when this hit was within the limit (and was counted).
    allowed: bool
    #: Hits left in the current window after this one (0 when refused).
    remaining: int
    #: Seconds until the window frees at least one hit.
    reset_after: float


@runtime_checkable
class RateLimitStore(Protocol):
    """Atomic counters with expiry, and a sliding window on top of them.

    The implementer's manual:

    - Every operation is atomic across all instances sharing the backend
      (Redis: one script or ``INCR`` + ``EXPIRE`` in a transaction), so two
      instances never both admit the last allowed hit.
    - Keys are opaque strings chosen by the caller (``ip:203.0.113.7:graphql``);
      the provider may prefix them.
    - A backend outage raises :class:`plugboard.errors.ProviderError`; the
      caller decides to fail open or closed.
    - Lifecycle: ``await start()``, ``await close()``, ``await check()``.

    Example::

        store = app[keys.SERVICES].get("ratelimit")
        state = await store.hit(f"ip:{ip}", limit=100, window=60)
        if not state.allowed:
            raise web.HTTPTooManyRequests(headers={"Retry-After": str(math.ceil(state.reset_after))})
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def incr(self, key: str, amount: int = 1, *, expiry: float) -> int:
        """Add ``amount`` to ``key`` and return the new total.

        The key expires ``expiry`` seconds after it was created (a fixed
        window); later increments do not extend it.
        """

    async def hit(self, key: str, *, limit: int, window: float, cost: int = 1) -> WindowState:
        """Count ``cost`` hits against ``limit`` per sliding (or moving) ``window`` seconds.

        Refused hits are not counted. ``cost`` lets one request spend more
        than one unit (query cost budgets).
        """

    async def peek(self, key: str, *, limit: int, window: float) -> WindowState:
        """The state of ``key`` without counting a hit."""

    async def reset(self, key: str) -> None:
        """Forget every count under ``key``."""
