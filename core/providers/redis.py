"""The app's shared Redis client, for every plugin that needs Redis.

``redis.url`` unset means no Redis: plugins then fall back to in-process
providers. When set, start-up PINGs the server and fails fast, naming the URL
(password masked), rather than erroring on the first request.
"""

from __future__ import annotations

import asyncio

import attrs
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from plugboard.errors import ProviderError
from plugboard.units import mask_url

__all__ = ["RedisConfig", "connect_redis", "close_redis", "mask_url", "reconnecting"]


def reconnecting() -> Retry:
    """The retry policy for every Redis client we make: a command that meets a
    dropped connection (the pool's connections all go stale when Redis
    restarts) reconnects and is sent again, up to 3 times within about a
    second. ``Redis.from_url`` alone retries nothing, unlike ``Redis()``.
    """
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3)


@attrs.define(frozen=True, kw_only=True)
class RedisConfig:
    """The ``redis`` settings section.

    :param url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS,
        ``unix:///path``); None for no Redis.
    :param connect_timeout: seconds to connect and answer the start-up PING.
    :param max_connections: the pool's limit.
    """

    url: str | None = None
    connect_timeout: float = 5.0
    max_connections: int = 100


async def connect_redis(cfg: RedisConfig) -> redis.asyncio.Redis | None:
    """A client for ``cfg.url`` that has answered PING, or None when no url is set.

    :raises ProviderError: the URL is invalid or the server cannot be reached
        within ``cfg.connect_timeout`` seconds.
    """
    if cfg.url is None:
        return None
    where = f"{mask_url(cfg.url)} (from redis.url)"
    try:
        client = redis.asyncio.Redis.from_url(
            cfg.url,
            socket_connect_timeout=cfg.connect_timeout,
            max_connections=cfg.max_connections,
            retry=reconnecting(),
        )
    except (ValueError, TypeError) as e:
        raise ProviderError(f"redis: invalid url {where}: {e}") from None
    try:
        # The connect timeout alone misses a server that accepts the TCP
        # connection but never answers; bound the whole PING.
        async with asyncio.timeout(cfg.connect_timeout):
            await client.ping()
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as e:
        await client.aclose()
        reason = "timed out" if isinstance(e, (TimeoutError, asyncio.TimeoutError)) else str(e) or type(e).__name__
        raise ProviderError(f"redis: cannot reach {where}: {reason}") from e
    return client


async def close_redis(client: redis.asyncio.Redis | None) -> None:
    """Close ``client`` and its connection pool; None is accepted and ignored."""
    if client is not None:
        await client.aclose()
