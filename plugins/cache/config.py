"""``cache:`` settings — the seed's CacheConfig, plus what a server needs around it.

The store itself is a service (``services.cache``: ``memory`` or ``redis``),
selected once in the core's ``services:`` section; this section says how the
cache plugin uses it::

    cache:
      redis: {enabled: false, ttl: 1h}     # enabled: services.cache must be redis; ttl: @cached default
      queryCache: {enabled: true, ttl: 60s} # GraphQL response cache; ttl is the default maxAge
      persistedQueries: {enabled: true, ttl: 1d}  # automatic persisted queries (APQ)
      cdnIntegration: none                  # cloudflare | aws | none

``redis.enabled: true`` is a statement about the deployment (the cache is
shared through Redis); start-up checks that ``services.cache`` really selects
the ``redis`` provider instead of silently running on memory.
"""

from __future__ import annotations

from typing import Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Secret, Size


def non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError("expected zero or more")


@attrs.define(frozen=True, kw_only=True)
class RedisOptions:
    """``cache.redis``: the seed's switch, and the default TTL of ``@cached`` entries."""

    enabled: bool = False
    ttl: Duration = attrs.field(default=3600.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class QueryCacheOptions:
    """``cache.queryCache``: the GraphQL response cache."""

    enabled: bool = True
    #: The default ``maxAge`` of root fields and fields returning objects
    #: (Apollo's ``defaultMaxAge``); ``0`` caches only what ``@cacheControl`` allows.
    ttl: Duration = attrs.field(default=60.0, validator=non_negative)
    #: A response larger than this is served but not stored.
    max_entry_size: Size = attrs.field(default=1024 * 1024, validator=validators.positive)
    #: Root fields never cached: a plugin's name (all its root fields) or a
    #: coordinate (``Query.onlineUsers``), for data that changes without a
    #: mutation (presence, job progress) in plugins that declare no hints.
    exclude: list[str] = attrs.field(factory=list)
    #: How long a request waits for another computing the same key before computing itself.
    lock_timeout: Duration = attrs.field(default=10.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class PersistedQueryOptions:
    """``cache.persistedQueries``: automatic persisted queries (Apollo's APQ), kept in the cache service."""

    enabled: bool = True
    #: How long a document is kept after it was last sent in full (the store may evict it sooner).
    ttl: Duration = attrs.field(default=86400.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class CloudflareOptions:
    """``cache.cloudflare``: purge by tag (and URL prefix) through Cloudflare's API."""

    zone_id: str = ""
    api_token: Secret = ""
    api_base: str = "https://api.cloudflare.com/client/v4"
    #: URL prefixes (``www.example.com/graphql``, no scheme) purged with every invalidation.
    prefixes: list[str] = attrs.field(factory=list)


@attrs.define(frozen=True, kw_only=True)
class AwsOptions:
    """``cache.aws``: CloudFront invalidations (CloudFront has no tags: paths are invalidated)."""

    distribution_id: str = ""
    #: Paths invalidated with every invalidation (GET GraphQL URLs all start with the path).
    paths: list[str] = attrs.field(factory=lambda: ["/graphql*"])
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None


@attrs.define(frozen=True, kw_only=True)
class CdnOptions:
    """How purges are sent: batched, retried, never in the mutation's way."""

    #: Tags gathered for this long are sent in one purge.
    batch_window: Duration = attrs.field(default=0.5, validator=non_negative)
    retries: int = attrs.field(default=3, validator=non_negative)
    backoff: Duration = attrs.field(default=0.5, validator=validators.positive)
    timeout: Duration = attrs.field(default=10.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class CacheConfig:
    """The ``cache:`` section (the seed's CacheConfig)."""

    redis: RedisOptions = attrs.field(factory=RedisOptions)
    query_cache: QueryCacheOptions = attrs.field(factory=QueryCacheOptions)
    persisted_queries: PersistedQueryOptions = attrs.field(factory=PersistedQueryOptions)
    cdn_integration: Literal["cloudflare", "aws", "none"] = "none"
    #: The ``services.cache`` service to use.
    service: str = "default"
    cloudflare: CloudflareOptions = attrs.field(factory=CloudflareOptions)
    aws: AwsOptions = attrs.field(factory=AwsOptions)
    cdn: CdnOptions = attrs.field(factory=CdnOptions)
    #: Send ``Cache-Tag`` (Cloudflare, comma-separated) and ``Surrogate-Key``
    #: (Fastly and others, space-separated) on GET responses.
    cdn_headers: bool = True
