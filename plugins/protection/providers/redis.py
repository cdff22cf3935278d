"""``redis``: counters in the core's Redis (``redis.url``), shared by every instance.

``limits.aio.storage.RedisStorage`` with the redis-py implementation; every
hit is one Lua script, so two instances never both admit the last allowed
hit. ``limits`` opens its own pool from the same URL (its scripts are bound
to its client), sized by ``max_connections``.
"""

from __future__ import annotations

from typing import Any

import attrs
from limits.aio.storage import RedisStorage

from plugboard import keys, validators
from plugboard.errors import ProviderError
from plugboard.plugins.protection.providers.base import LimitsStore
from plugboard.units import Duration, mask_url


@attrs.define(frozen=True, kw_only=True)
class RedisRateLimitConfig:
    """``services.ratelimit: {provider: redis, ...}`` (the server is ``redis.url``)."""

    prefix: str = "plugboard:ratelimit"
    #: Bound on every Redis command; past it the caller fails open or closed.
    timeout: Duration = attrs.field(default=0.5, validator=validators.positive)
    max_connections: int = attrs.field(default=50, validator=validators.positive)


class RedisRateLimitStore(LimitsStore):
    """The ``redis`` ratelimit provider (see :class:`plugboard.providers.ratelimit.RateLimitStore`)."""

    name = "redis"

    def __init__(self, config: RedisRateLimitConfig, app: Any) -> None:
        super().__init__()
        self.config = config
        self._app = app

    async def start(self) -> None:
        url = self._app[keys.CORE_CONFIG].redis.url
        if not url:
            raise ProviderError("the redis ratelimit provider needs redis.url (or REDIS_URL) to be set")
        self._bind(
            RedisStorage(
                "async+" + url,
                implementation="redispy",
                key_prefix=self.config.prefix,
                wrap_exceptions=True,
                socket_timeout=self.config.timeout,
                socket_connect_timeout=self.config.timeout,
                max_connections=self.config.max_connections,
            )
        )
        self._where = mask_url(url)

    async def close(self) -> None:
        if self.storage is not None:
            pool = getattr(self.storage.bridge, "storage", None)
            if pool is not None and hasattr(pool, "aclose"):
                await pool.aclose()
            self.storage = None
