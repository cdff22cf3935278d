"""``protection:`` settings — the seed's RateLimitConfig, plus what a server needs around it.

The counters live in the ``ratelimit`` service (``services.ratelimit``:
``memory`` or ``redis``), selected once in the core's ``services:`` section;
this section says what to limit::

    protection:
      requests:                     # the seed's policy: per IP, and the default of the others
        window_ms: 900000
        max: 100
        skip_failed_requests: false
        per_user: {window_ms: 60000, max: 600}   # unset: the default policy's
        per_key: {max: 6000}
        key_overrides: {pbk_1a2b3c4d: {max: 60000}}   # by key prefix or id
      graphql: {max_complexity: 1000, max_depth: 12}
      budget: {enabled: false, window_ms: 3600000, max: 100000}   # cost units per client per window
      api_keys: true
      fail_closed: false          # store down: admit (logged) or refuse with 503
      concurrency: {max: 0}       # queries/mutations at once per client and instance (0: no cap)
      usage: {enabled: false, flush_interval: 10s, retention: 30d}
      auth_failures: {max: 10, window_ms: 900000}   # failed authentications per IP (0: off)

Environment: ``RATE_LIMIT_WINDOW_MS``, ``RATE_LIMIT_MAX``,
``RATE_LIMIT_SKIP_FAILED_REQUESTS`` (aliases in settings.yaml).
"""

from __future__ import annotations

import ipaddress

import attrs

from plugboard import validators
from plugboard.plugins.protection.jwtauth import JWTConfig
from plugboard.units import Duration


def _networks(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None


def _positive_values(value: dict[str, int]) -> None:
    for name, item in value.items():
        if item <= 0:
            raise ValueError(f"{name}: must be > 0, not {item}")


def _optional_positive(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None:
        validators.positive(instance, attribute, value)


@attrs.define(frozen=True, kw_only=True)
class PolicyOptions:
    """A window and a maximum for one kind of client; either unset takes the default policy's."""

    window_ms: int | None = attrs.field(default=None, validator=_optional_positive)
    max: int | None = attrs.field(default=None, validator=_optional_positive)


@attrs.define(frozen=True, kw_only=True)
class RequestLimits:
    """``protection.requests``: request limits on every transport.

    Each request counts once, under its most specific verified identity: an
    API key (``per_key``, or the key's entry in ``key_overrides``), else a
    user (``per_user``), else the client IP (this default policy).
    """

    enabled: bool = True
    #: The window in milliseconds (the seed's ``windowMs``); counted in whole seconds.
    window_ms: int = attrs.field(default=15 * 60 * 1000, validator=validators.positive)
    #: Requests per window per client (the seed's ``max``).
    max: int = attrs.field(default=1000, validator=validators.positive)
    #: Responses with status >= 400 are given back (the seed's ``skipFailedRequests``).
    skip_failed_requests: bool = False
    #: Paths never limited (health checks).
    exempt_paths: list[str] = attrs.field(factory=lambda: ["/healthz", "/readyz", "/metrics"])
    #: Authenticated users (a JWT's ``sub``, an API key's owner).
    per_user: PolicyOptions = attrs.field(factory=PolicyOptions)
    #: API keys.
    per_key: PolicyOptions = attrs.field(factory=PolicyOptions)
    #: One key's own policy, by its visible prefix (``pbk_1a2b3c4d``) or id.
    key_overrides: dict[str, PolicyOptions] = attrs.field(factory=dict)

    @property
    def window(self) -> float:
        return self.window_ms / 1000.0


@attrs.define(frozen=True, kw_only=True)
class GraphQLLimits:
    """``protection.graphql``: cost and depth of one operation (0 turns a check off)."""

    max_complexity: int = attrs.field(default=1000, validator=validators.non_negative)
    max_depth: int = attrs.field(default=12, validator=validators.non_negative)
    #: The multiplier of a list field without a ``first``/``last``/``limit`` argument.
    default_list_size: int = attrs.field(default=10, validator=validators.positive)
    object_cost: int = attrs.field(default=1, validator=validators.non_negative)
    scalar_cost: int = attrs.field(default=0, validator=validators.non_negative)
    #: Execution time limit of one query or mutation ("30s"; 0: none): cancelled and
    #: answered with ``extensions.code: TIMEOUT``. Subscriptions are not limited.
    timeout: Duration = attrs.field(default=0.0, validator=validators.non_negative)
    #: "Did you mean ...?" in error messages: ``auto`` hides it from non-admins when
    #: ``graphql.introspection`` is off, ``hide`` always, ``show`` never.
    suggestions: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "hide", "show")))


@attrs.define(frozen=True, kw_only=True)
class CostBudget:
    """``protection.budget``: each client (user, else IP) spends its operations' cost from a window's budget."""

    enabled: bool = False
    window_ms: int = attrs.field(default=60 * 60 * 1000, validator=validators.positive)
    #: Cost units per window per client.
    max: int = attrs.field(default=100_000, validator=validators.positive)
    #: One key's own budget per window, by its visible prefix (``pbk_1a2b3c4d``) or id.
    key_overrides: dict[str, int] = attrs.field(factory=dict, validator=lambda i, a, v: _positive_values(v))

    @property
    def window(self) -> float:
        return self.window_ms / 1000.0


@attrs.define(frozen=True, kw_only=True)
class MetricsOptions:
    """``protection.metrics``: Prometheus ``/metrics``."""

    #: None (the default): on when ``/metrics`` can be read, i.e.
    #: ``server.admin_token`` is set or ``public`` is true; counting every
    #: operation for an endpoint nobody may scrape is CPU spent for nothing.
    enabled: bool | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(bool)))
    path: str = attrs.field(default="/metrics", validator=validators.url_path)
    #: False: only ``Authorization: Bearer <server.admin_token>`` may read it.
    public: bool = False


@attrs.define(frozen=True, kw_only=True)
class ConcurrencyLimits:
    """``protection.concurrency``: queries and mutations one client (key > user > IP) may run at once, per instance."""

    #: 0: no cap. Over it: ``TOO_MANY_CONCURRENT_OPERATIONS`` (HTTP 429).
    max: int = attrs.field(default=0, validator=validators.non_negative)


@attrs.define(frozen=True, kw_only=True)
class UsageOptions:
    """``protection.usage``: per-minute usage analytics in the records store (``apiUsage``)."""

    enabled: bool = False
    #: How often this instance writes what it aggregated (off the request path).
    flush_interval: Duration = attrs.field(default=10.0, validator=validators.positive)
    #: Minutes older than this are deleted.
    retention: Duration = attrs.field(default=30 * 86400.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class AuthFailureLimits:
    """``protection.auth_failures``: failed authentications per client IP before its credentials are refused unread."""

    #: 0: no throttle.
    max: int = attrs.field(default=10, validator=validators.non_negative)
    window_ms: int = attrs.field(default=15 * 60 * 1000, validator=validators.positive)

    @property
    def window(self) -> float:
        return self.window_ms / 1000.0


@attrs.define(frozen=True, kw_only=True)
class ProtectionConfig:
    """``protection:`` — request rate limits, query cost and depth."""

    requests: RequestLimits = attrs.field(factory=RequestLimits)
    graphql: GraphQLLimits = attrs.field(factory=GraphQLLimits)
    budget: CostBudget = attrs.field(factory=CostBudget)
    metrics: MetricsOptions = attrs.field(factory=MetricsOptions)
    #: Bearer JWTs as identity (PyJWT): HS256 ``secret`` or RS256/ES256 from ``jwks_url``.
    jwt: JWTConfig = attrs.field(factory=JWTConfig)
    #: The seed's ``apiKeys`` switch: API keys accepted (``X-API-Key`` or a ``pbk_`` bearer) and managed.
    api_keys: bool = False
    #: Proxies whose ``X-Forwarded-For`` is believed (addresses or CIDRs); empty: the
    #: core's ``server.trust_proxy_headers`` decides, trusting the last hop only.
    trusted_proxies: list[str] = attrs.field(factory=list, validator=_networks)
    #: When the ratelimit store fails: False admits the request (logged), True refuses with 503.
    fail_closed: bool = False
    concurrency: ConcurrencyLimits = attrs.field(factory=ConcurrencyLimits)
    usage: UsageOptions = attrs.field(factory=UsageOptions)
    auth_failures: AuthFailureLimits = attrs.field(factory=AuthFailureLimits)
