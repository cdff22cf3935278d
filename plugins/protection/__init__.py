"""Protection: rate limits on every transport, query depth and cost, and the ratelimit stores.

The seed's "Rate Limiting & API Protection". The hook implementations are thin:

- ``memory`` and ``redis`` providers of the core's ``ratelimit`` kind
  (:mod:`.providers`, on the ``limits`` library), selected in ``services.ratelimit``;
- the request policy (``protection.requests``), an aiohttp middleware
  (:mod:`.limiter`) that covers HTTP, WebSocket upgrades and SSE streams, with
  ``RateLimit-Policy``/``RateLimit`` headers and 429 + ``Retry-After``;
- depth and cost limits (``protection.graphql``), an operation step
  (:mod:`.cost`) on the core's document view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from plugboard import hookimpl, keys
from plugboard.plugins.protection.config import ProtectionConfig
from plugboard.plugins.protection.limiter import LIMITER, RequestLimiter, middleware, on_response_prepare
from plugboard.plugins.protection.providers.memory import MemoryRateLimitConfig
from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig
from plugboard.providers.registry import ProviderSpec


@hookimpl
def plugboard_config_class() -> type:
    return ProtectionConfig


@hookimpl
def plugboard_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            kind="ratelimit",
            name="memory",
            factory="plugboard.plugins.protection.providers.memory:MemoryRateLimitStore",
            config=MemoryRateLimitConfig,
            description="moving-window counters in this process (limits' MemoryStorage)",
        ),
        ProviderSpec(
            kind="ratelimit",
            name="redis",
            factory="plugboard.plugins.protection.providers.redis:RedisRateLimitStore",
            config=RedisRateLimitConfig,
            description="moving-window counters in the shared Redis (redis.url), atomic across instances",
            requires="limits",
        ),
    ]


@hookimpl
def plugboard_configure(app: web.Application, config: ProtectionConfig) -> None:
    app[LIMITER] = RequestLimiter(app, config)
    app.on_response_prepare.append(on_response_prepare)


@hookimpl
async def plugboard_lifespan(app: web.Application, config: ProtectionConfig):
    limiter = app[LIMITER]
    services = app[keys.SERVICES]
    if not services.names("ratelimit"):
        # No services.ratelimit: a memory store of our own (limits hold per instance).
        limiter._store = await app[keys.PROVIDERS].create(
            "ratelimit", "memory", MemoryRateLimitConfig(), app=app, owner="protection", label="ratelimit:memory (built-in)"
        )
    yield


@hookimpl
def plugboard_middleware(app: web.Application, config: ProtectionConfig) -> list[Any]:
    if not config.requests.enabled:
        return []
    return [middleware(app[LIMITER])]


@hookimpl
def plugboard_operation_steps(app: web.Application, config: ProtectionConfig) -> list[Any]:
    from plugboard.plugins.protection.cost import operation_steps

    return operation_steps(app, config)
