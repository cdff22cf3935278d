"""Protection: rate limits on every transport, query depth and cost, and the ratelimit stores.

The seed's "Rate Limiting & API Protection". The hook implementations are thin:

- ``memory`` and ``redis`` providers of the core's ``ratelimit`` kind
  (:mod:`.providers`, one sliding-window counter), selected in ``services.ratelimit``;
- the request policies (``protection.requests``: per IP, per user, per API
  key), an aiohttp middleware (:mod:`.limiter`) that covers HTTP, WebSocket
  upgrades (4429 on floods) and SSE streams, with ``RateLimit-Policy``/
  ``RateLimit`` headers and 429 + ``Retry-After``; identified requests are
  counted in the operation step (:mod:`.operations`);
- ``@rateLimit(max, window, per)`` on fields (:mod:`.directive`);
- depth and cost limits (``protection.graphql``) and cost budgets
  (``protection.budget``) on the core's document view (:mod:`.cost`, whose
  one operation step runs every limit);
- API keys (``protection.api_keys``): records-store table, GraphQL
  management (:mod:`.graphql`), the ``plugboard apikey`` command
  (:mod:`.commands`), and the identity they give requests (:func:`plugboard_context`);
- operation guards (:mod:`.guards`): the execution timeout, the concurrency
  cap per client, "Did you mean" suggestions hidden when introspection is off;
- usage analytics per key, user and operation (``protection.usage``,
  :mod:`.usage`, ``apiUsage``);
- ``/metrics`` (:mod:`.metrics`), where every plugin's ``plugboard_metrics``
  registers its series.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Awaitable

from aiohttp import web

from plugboard import hookimpl, keys
from plugboard.cancelling import cancel_until_done
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.graphql.context import is_admin
from plugboard.plugins.protection.apikeys import ApiKeys, presented_key
from plugboard.plugins.protection.appkeys import API_KEYS, JWT
from plugboard.plugins.protection.jwtauth import JWTVerifier
from plugboard.plugins.protection.config import ProtectionConfig
from plugboard.plugins.protection.metrics import METRICS, Metrics, metrics_enabled, metrics_handler, metrics_step
from plugboard.plugins.protection.limiter import LIMITER, RequestLimiter, middleware, on_response_prepare
from plugboard.plugins.protection.providers.memory import MemoryRateLimitConfig
from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig
from plugboard.providers.registry import ProviderSpec


@hookimpl
def plugboard_config_class() -> type:
    return ProtectionConfig


@hookimpl
def plugboard_schema(config: ProtectionConfig) -> list[Path]:
    schemas = [Path(__file__).with_name("schema.graphql")]
    if config.api_keys:
        schemas.append(Path(__file__).with_name("apikeys.graphql"))
    if config.usage.enabled:
        schemas.append(Path(__file__).with_name("usage.graphql"))
    return schemas


@hookimpl
def plugboard_resolvers(config: ProtectionConfig) -> dict[str, Any]:
    from plugboard.plugins.protection.graphql import RESOLVERS, USAGE_RESOLVERS

    resolvers: dict[str, Any] = {}
    if config.api_keys:
        resolvers.update(RESOLVERS)
    if config.usage.enabled:
        resolvers.update(USAGE_RESOLVERS)
    return resolvers


@hookimpl
def plugboard_tables(metadata: Any, config: ProtectionConfig) -> None:
    # Defined even with api_keys off, so turning them on later finds the table's shape unchanged.
    from plugboard.plugins.protection.apikeys import define_tables

    define_tables(metadata)
    from plugboard.plugins.protection.usage import define_tables as define_usage_tables

    define_usage_tables(metadata)


@hookimpl
def plugboard_commands() -> list[Any]:
    from plugboard.plugins.protection.commands import commands

    return commands()


@hookimpl
def plugboard_context(context: Any, request: web.Request, connection_params: Any) -> Awaitable[None] | None:
    # Most requests carry no credentials: nothing to verify, and no coroutine.
    if not connection_params and (request is None or ("Authorization" not in request.headers and "X-API-Key" not in request.headers)):
        return None
    return _identify(context, request, connection_params)


async def _identify(context: Any, request: web.Request, connection_params: Any) -> None:
    from plugboard.plugins.protection.authfail import AUTH_FAILURES

    failures = context.app.get(AUTH_FAILURES)
    if failures is not None and context.transport == "ws" and request is not None:
        # HTTP (and SSE) failures are 401 responses, counted by the middleware.
        return await failures.websocket(request, connection_params, _authenticate(context, request, connection_params))
    return await _authenticate(context, request, connection_params)


async def _authenticate(context: Any, request: web.Request, connection_params: Any) -> None:
    keys_ = context.app.get(API_KEYS)
    secret = presented_key(request.headers, connection_params) if keys_ is not None else None
    if secret is None:
        verifier = context.app.get(JWT)
        if verifier is not None:
            await _jwt_identity(context, verifier, request, connection_params)
        return
    key = await keys_.authenticate(secret)
    context.api_key = key
    context.identity = {"id": key.owner or f"apikey:{key.id}", "apiKey": key.id}
    context.scopes = key.scopes
    if "admin" in key.scopes:
        context.roles = tuple({*context.roles, "admin"})
    if key.expires_at is not None:
        expires = key.expires_at.timestamp()
        if context.identity_expires_at is None or expires < context.identity_expires_at:
            context.identity_expires_at = expires


async def _jwt_identity(context: Any, verifier: JWTVerifier, request: web.Request, connection_params: Any) -> None:
    auth = request.headers.get("Authorization", "")
    if connection_params and isinstance(connection_params.get("authorization"), str):
        auth = connection_params["authorization"]
    if auth[:7].lower() != "bearer " or is_admin(context):
        return
    claims = await verifier.verify(auth[7:].strip())
    context.identity = {"id": str(claims["sub"]), "claims": claims}
    context.roles = verifier.roles(claims)
    context.identity_expires_at = float(claims["exp"])


@hookimpl
def plugboard_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            kind="ratelimit",
            name="memory",
            factory="plugboard.plugins.protection.providers.memory:MemoryRateLimitStore",
            config=MemoryRateLimitConfig,
            description="sliding-window counters in this process",
        ),
        ProviderSpec(
            kind="ratelimit",
            name="redis",
            factory="plugboard.plugins.protection.providers.redis:RedisRateLimitStore",
            config=RedisRateLimitConfig,
            description="sliding-window counters in the shared Redis (redis.url), one Lua script per check, shared by every instance",
            requires="redis",
        ),
    ]


@hookimpl
def plugboard_configure(app: web.Application, config: ProtectionConfig) -> None:
    if config.jwt.enabled and not (config.jwt.secret or config.jwt.jwks_url):
        settings = app[keys.SETTINGS]
        raise ConfigError(
            [ConfigProblem("protection.jwt", "...", "jwt.enabled needs a secret (HS256) or a jwks_url (RS256/ES256)", settings.source("protection.jwt.enabled"))]
        )
    app[LIMITER] = RequestLimiter(app, config)
    if metrics_enabled(config.metrics, app[keys.CORE_CONFIG].server.admin_token):
        app[METRICS] = Metrics(app)
    if config.jwt.enabled:
        app[JWT] = JWTVerifier(config.jwt)
    app.on_response_prepare.append(on_response_prepare)


@hookimpl
async def plugboard_lifespan(app: web.Application, config: ProtectionConfig):
    limiter = app[LIMITER]
    if config.api_keys:
        app[API_KEYS] = ApiKeys(app[keys.RECORDS], app[keys.METADATA])
    # The counters are the core's ratelimit service: without services.ratelimit,
    # the core's default is this plugin's memory provider (limits per instance).
    limiter.use_store(app[keys.SERVICES].get("ratelimit"))
    if config.usage.enabled:
        async with _usage_recorder(app, config):
            yield
        return
    yield


@contextlib.asynccontextmanager
async def _usage_recorder(app: web.Application, config: ProtectionConfig) -> Any:
    from plugboard.plugins.protection.usage import USAGE, UsageRecorder

    recorder = app[USAGE] = UsageRecorder(app[keys.RECORDS], app[keys.METADATA], retention=config.usage.retention)
    task = asyncio.create_task(recorder.run(config.usage.flush_interval), name="plugboard.protection.usage")
    try:
        yield
    finally:
        await cancel_until_done([task])
        # What the last interval counted, before the records store closes.
        await recorder.flush()


@hookimpl
def plugboard_middleware(app: web.Application, config: ProtectionConfig) -> list[Any]:
    from plugboard.plugins.protection.authfail import AUTH_FAILURES, AuthFailures

    failures = None
    if config.auth_failures.max:
        failures = app[AUTH_FAILURES] = AuthFailures(app[LIMITER], config.auth_failures)
    if not config.requests.enabled:
        return [failures.middleware()] if failures is not None else []
    # Inside the request limits: a refused guess still counts as a request.
    return [middleware(app[LIMITER], failures)]


@hookimpl
def plugboard_operation_steps(app: web.Application, config: ProtectionConfig) -> list[Any]:
    from plugboard.plugins.protection.cost import operation_steps

    steps = operation_steps(app, config)
    from plugboard.plugins.protection.guards import guard_steps

    # Before the limits: a refused or timed-out operation frees its slot, and
    # errors the limits give are cleaned of suggestions too.
    steps[:0] = guard_steps(app, config)
    if config.usage.enabled:
        from plugboard.plugins.protection.usage import usage_step

        steps.insert(0, usage_step(app))
    if METRICS in app:
        # Outermost: refusals by the limits are counted too.
        steps.insert(0, metrics_step(app))
    return steps


@hookimpl
def plugboard_routes(app: web.Application, config: ProtectionConfig) -> list[Any]:
    if METRICS not in app:
        return []
    return [web.get(config.metrics.path, metrics_handler)]


@hookimpl
def plugboard_startup(app: web.Application, config: ProtectionConfig) -> None:
    if METRICS in app:
        # Every plugin's lifespan has set up by now: their collectors can find their objects.
        app[METRICS].collect_plugins()
