"""Prometheus ``/metrics`` (prometheus-client), one registry per app, and the operation step that feeds it.

Series: ``plugboard_graphql_operations_total{operation,type,outcome}``,
``plugboard_graphql_operation_seconds{operation,type}`` (histogram),
``plugboard_graphql_operation_cost{operation}`` (histogram),
``plugboard_ratelimit_refusals_total``, ``plugboard_ratelimit_store_errors_total``
and, when the cache plugin runs, ``plugboard_cache_{hits,misses}_total{layer}``.
Other plugins add theirs with :func:`registry` (``Counter(..., registry=registry(app))``).

Operation names come from clients, so labels are bounded: a name that is not
a GraphQL name, or beyond the first :data:`MAX_OPERATION_NAMES`, is counted
as ``other``.

``/metrics`` answers only to ``Authorization: Bearer <server.admin_token>``
unless ``protection.metrics.public`` is set (for a scraper on a private bind).
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from plugboard import keys

MAX_OPERATION_NAMES = 200
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,99}$")


class Metrics:
    """The app's registry and the protection plugin's own series."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "plugboard_graphql_operations", "GraphQL operations by name, type and outcome", ["operation", "type", "outcome"], registry=self.registry
        )
        self.latency = Histogram("plugboard_graphql_operation_seconds", "GraphQL operation latency", ["operation", "type"], registry=self.registry)
        self.cost = Histogram(
            "plugboard_graphql_operation_cost",
            "Computed query cost",
            ["operation"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, float("inf")),
            registry=self.registry,
        )
        self.registry.register(_PullCollector(app))
        self._names: set[str] = set()

    def operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name in self._names:
            return name
        if not _NAME.match(name) or len(self._names) >= MAX_OPERATION_NAMES:
            return "other"
        self._names.add(name)
        return name


class _PullCollector:
    """Counters other parts keep themselves, read at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from plugboard.plugins.protection.limiter import LIMITER

        limiter = self.app.get(LIMITER)
        if limiter is not None:
            yield CounterMetricFamily("plugboard_ratelimit_refusals", "Requests and operations refused by a rate limit or budget", value=limiter.refusals)
            yield CounterMetricFamily("plugboard_ratelimit_store_errors", "Rate-limit store failures", value=limiter.store_errors)
        try:
            from plugboard.plugins.cache import metrics as cache_metrics
        except ImportError:  # the cache plugin is not installed
            return
        layers = cache_metrics(self.app)
        if layers:
            hits = CounterMetricFamily("plugboard_cache_hits", "Cache hits by layer", labels=["layer"])
            misses = CounterMetricFamily("plugboard_cache_misses", "Cache misses by layer", labels=["layer"])
            for layer, counts in layers.items():
                hits.add_metric([layer], counts.get("hits", 0))
                misses.add_metric([layer], counts.get("misses", 0))
            yield hits
            yield misses


METRICS: web.AppKey[Metrics] = web.AppKey("plugboard.protection.metrics", Metrics)


def registry(app: web.Application) -> CollectorRegistry | None:
    """The app's Prometheus registry, for plugins to register their own metrics (None without the protection plugin)."""
    metrics = app.get(METRICS)
    return metrics.registry if metrics is not None else None


def operation_name(app: web.Application, op: Any) -> str | None:
    """The operation's name: the request's ``operationName``, else the document's (from the cost analysis' cache)."""
    if op.operation_name or op.parsed is None:
        return op.operation_name
    from plugboard.plugins.protection.cost import ANALYSIS

    analysis = app.get(ANALYSIS)
    return analysis.of(op)[2] if analysis is not None else op.document.operation_name


def metrics_step(app: web.Application) -> Any:
    async def metrics(op: Any, call_next: Any) -> Any:
        m = app[METRICS]
        start = time.perf_counter()
        outcome = "error"
        try:
            result = await call_next(op)
            outcome = "error" if isinstance(result, dict) and result.get("errors") else "ok"
            return result
        finally:
            name = m.operation_label(operation_name(app, op))
            kind = op.operation_type or "unknown"
            m.operations.labels(name, kind, outcome).inc()
            if kind != "subscription":
                m.latency.labels(name, kind).observe(time.perf_counter() - start)

    return metrics


async def metrics_handler(request: web.Request) -> web.Response:
    app = request.app
    config = app[keys.PLUGIN_CONFIGS]["protection"]
    if not config.metrics.public:
        token = app[keys.CORE_CONFIG].server.admin_token
        sent = request.headers.get("Authorization", "")
        if not token or sent[:7].lower() != "bearer " or not hmac.compare_digest(sent[7:].strip().encode(), str(token).encode()):
            raise web.HTTPUnauthorized(text="metrics need Authorization: Bearer <server.admin_token>", headers={"WWW-Authenticate": "Bearer"})
    body = generate_latest(app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
