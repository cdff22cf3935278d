"""``memory``: counters in this process (``limits.aio.storage.MemoryStorage``).

The embedded default. Limits hold per instance only; select ``redis`` when
several instances must share them.
"""

from __future__ import annotations

from typing import Any

import attrs
from limits.aio.storage import MemoryStorage

from plugboard.plugins.protection.providers.base import LimitsStore


@attrs.define(frozen=True, kw_only=True)
class MemoryRateLimitConfig:
    """``services.ratelimit: {provider: memory}`` (no options)."""


class MemoryRateLimitStore(LimitsStore):
    """The ``memory`` ratelimit provider (see :class:`plugboard.providers.ratelimit.RateLimitStore`)."""

    name = "memory"

    def __init__(self, config: MemoryRateLimitConfig | None = None, app: Any = None) -> None:
        super().__init__()
        self.config = config or MemoryRateLimitConfig()

    async def start(self) -> None:
        # Created here, not in __init__: MemoryStorage schedules its expiry
        # task on the running loop.
        self._bind(MemoryStorage())

    async def close(self) -> None:
        timer = getattr(self.storage, "timer", None)
        if timer is not None:
            timer.cancel()
        self.storage = None

    async def check(self) -> None:
        return None
