"""Caching: memory and Redis stores, the GraphQL response cache, resolver caches, invalidation, CDN purge.

The seed's "Caching Layer". The hook implementations are thin:

- ``memory`` and ``redis`` providers of the core's ``cache`` kind
  (:mod:`.providers`), selected in ``services.cache``;
- the response cache, an operation step (:mod:`.response`) driven by
  ``@cacheControl`` hints (:mod:`.policy`) declared in ``schema.graphql``;
- ``@cached`` and per-request DataLoaders for resolvers
  (:mod:`.resolver_cache`, :mod:`.loaders`);
- invalidation by tags, across instances through the core's pubsub
  (:mod:`.runtime`), ``invalidateCache`` for admins, CDN purges (:mod:`.cdn`);
- the store of the core's automatic persisted queries (:mod:`.persisted`);
- counters per provider: :func:`metrics`.

Public API for other plugins: :func:`cached`, :func:`cache_hint`,
:func:`invalidate`, :func:`metrics`, and ``context.loaders``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from plugboard import hookimpl, keys
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.cache.config import CacheConfig
from plugboard.plugins.cache.appkeys import HINTS, RUNTIME
from plugboard.plugins.cache.loaders import Loaders
from plugboard.plugins.cache.policy import cache_hint
from plugboard.plugins.cache.providers.memory import MemoryCacheConfig
from plugboard.plugins.cache.providers.redis import RedisCacheConfig
from plugboard.plugins.cache.resolver_cache import cached
from plugboard.providers.registry import ProviderSpec

__all__ = ["cached", "cache_hint", "invalidate", "metrics"]


async def invalidate(app: Any, tags: Iterable[str]) -> int:
    """Remove every cached entry carrying one of ``tags`` on every instance, and purge the CDN.

    For plugins whose changes a mutation's result does not show (a delete,
    a background job). Never raises for a store or CDN outage (logged);
    raises ``ValueError`` for a malformed tag. A no-op without the cache plugin.
    """
    runtime = app.get(RUNTIME)
    if runtime is None:
        return 0
    return await runtime.invalidate(tags)


def metrics(app: Any) -> dict[str, dict[str, int]]:
    """Counters per layer: ``{"response": {...}, "memory"|"redis"|"local": {hits, misses, stores, evictions, invalidations, errors, too_large}}``."""
    runtime = app.get(RUNTIME)
    return runtime.metrics() if runtime is not None else {}


@hookimpl
def plugboard_metrics(app: Any, registry: Any) -> None:
    from plugboard.plugins.cache.prometheus import register

    register(app, registry)


@hookimpl
def plugboard_config_class() -> type:
    return CacheConfig


@hookimpl
def plugboard_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            kind="cache",
            name="memory",
            factory="plugboard.plugins.cache.providers.memory:MemoryCache",
            config=MemoryCacheConfig,
            description="in-process LRU bounded by entries and bytes, with TTL and tags",
        ),
        ProviderSpec(
            kind="cache",
            name="redis",
            factory="plugboard.plugins.cache.providers.redis:RedisCache",
            config=RedisCacheConfig,
            description="the shared Redis (redis.url), optionally behind an in-process layer",
        ),
    ]


@hookimpl
def plugboard_configure(app: Any, config: CacheConfig) -> None:
    settings = app[keys.SETTINGS]
    services = app[keys.SERVICES]
    services.require("cache", config.service, key="cache.service", source=settings.source("cache.service"))
    provider = services.provider("cache", config.service)
    problems = []
    if config.redis.enabled and provider != "redis":
        problems.append(
            ConfigProblem(
                "cache.redis.enabled",
                True,
                f"the cache service {config.service!r} uses {provider}; "
                f"set services.cache.provider: redis (with redis.url) or cache.redis.enabled: false",
                settings.source("cache.redis.enabled"),
            )
        )
    if config.cdn_integration == "cloudflare" and not (config.cloudflare.zone_id and config.cloudflare.api_token):
        problems.append(ConfigProblem("cache.cloudflare", "...", "cdnIntegration: cloudflare needs zone_id and api_token", settings.source("cache.cdnIntegration")))
    if config.cdn_integration == "aws" and not config.aws.distribution_id:
        problems.append(ConfigProblem("cache.aws.distribution_id", "", "cdnIntegration: aws needs a CloudFront distribution_id", settings.source("cache.cdnIntegration")))
    if problems:
        raise ConfigError(problems)


@hookimpl
def plugboard_schema() -> Path:
    return Path(__file__).with_name("schema.graphql")


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return {"Mutation.invalidateCache": resolve_invalidate_cache}


@hookimpl
def plugboard_operation_steps(app: Any, config: CacheConfig) -> list[Any]:
    from plugboard.plugins.cache.policy import read_hints
    from plugboard.plugins.cache.response import ResponseCache

    # Read here, once the schema is composed and before anything starts: a
    # bad hint fails start-up naming its SDL file and line.
    composed = app[keys.COMPOSED_SCHEMA]
    hints = read_hints(composed.fragments)
    exclude = set(config.query_cache.exclude)
    hints.excluded = frozenset(
        coordinate
        for coordinate, (owner, _where) in composed.field_owners.items()
        if coordinate.split(".", 1)[0] in ("Query", "Mutation") and (owner in exclude or coordinate in exclude)
    )
    app[HINTS] = hints
    step = ResponseCache(app)
    step.__name__ = "response_cache"  # type: ignore[attr-defined]
    return [step]


@hookimpl
def plugboard_persisted_queries(app: Any, config: CacheConfig) -> Any:
    from plugboard.plugins.cache.persisted import CachedPersistedQueries

    options = config.persisted_queries
    return CachedPersistedQueries(app, options.ttl) if options.enabled else None


@hookimpl
def plugboard_middleware(config: CacheConfig) -> list[Any]:
    from plugboard.plugins.cache.cdn_headers import middleware

    return middleware(config)


@hookimpl
def plugboard_context(context: Any) -> None:
    # Set rather than returned: no mapping to build and merge on every
    # request (and Loaders is imported with the module, not here per call).
    context.loaders = Loaders(context)


@hookimpl
async def plugboard_lifespan(app: Any, config: CacheConfig):
    from plugboard.plugins.cache.cdn import make_purger
    from plugboard.plugins.cache.runtime import CacheRuntime

    # The core's cache service (services.cache; without one, the embedded
    # default: this plugin's memory provider with its default options).
    cache = app[keys.SERVICES].get("cache", config.service)
    purger = make_purger(config)
    runtime = CacheRuntime(app, config, cache, app[HINTS], purger)
    if purger is not None:
        await purger.start()
    await runtime.start()
    app[RUNTIME] = runtime
    try:
        yield
    finally:
        await runtime.close()
        if purger is not None:
            await purger.close()


async def resolve_invalidate_cache(parent: Any, args: dict, context: Any, info: Any) -> int:
    from plugboard.errors import ProviderError
    from plugboard.plugins.cache.tags import BadTag

    if not is_admin(context):
        raise GraphQLError("invalidateCache is for admins", "FORBIDDEN")
    tags = args.get("tags")
    if not tags:
        raise GraphQLError("tags must name at least one tag (Book:42, Book)", "BAD_USER_INPUT")
    try:
        return await context.app[RUNTIME].invalidate(tags, strict=True)
    except BadTag as e:
        raise GraphQLError(str(e), "BAD_USER_INPUT") from None
    except ProviderError as e:
        raise GraphQLError(f"the cache store did not answer: {e}", "SERVICE_UNAVAILABLE") from None
