"""Prometheus ``/metrics`` (prometheus-client), one registry per app, and the operation step that feeds it.

Series: ``plugboard_graphql_operations_total{operation,type,outcome}``,
``plugboard_graphql_subscriptions_active{operation,transport}``,
``plugboard_graphql_operation_seconds{operation,type}`` (histogram),
``plugboard_graphql_operation_cost{operation}`` (histogram),
``plugboard_ratelimit_refusals_total``, ``plugboard_ratelimit_store_errors_total``
``plugboard_operations_timed_out_total``, ``plugboard_operations_concurrency_refusals_total``,
``plugboard_operations_in_flight``; every other plugin's come through the core's
``plugboard_metrics`` hook, called once at start-up with this registry (see
README, "Metrics", for the list).

Operation names come from clients, so labels are bounded: a name that is not
a GraphQL name, or beyond the first :data:`MAX_OPERATION_NAMES`, is counted
as ``other``.

``/metrics`` answers only to ``Authorization: Bearer <server.admin_token>``
unless ``protection.metrics.public`` is set (for a scraper on a private bind).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from plugboard import keys
from plugboard.plugins.protection.tally import CounterTally, HistogramTally, TallyCollector

logger = logging.getLogger("plugboard.protection")

MAX_OPERATION_NAMES = 200
#: ``operation.state`` key: when the metrics step saw the operation.
_STARTED = "protection.metrics.started"
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,99}$")


class Metrics:
    """The app's registry and the protection plugin's own series."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        # Updated by every operation: plain dicts, read at scrape time (see .tally).
        self.operations = CounterTally("plugboard_graphql_operations", "GraphQL operations by name, type and outcome", ["operation", "type", "outcome"])
        self.latency = HistogramTally("plugboard_graphql_operation_seconds", "GraphQL operation latency", ["operation", "type"])
        self.cost = HistogramTally(
            "plugboard_graphql_operation_cost",
            "Computed query cost",
            ["operation"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, float("inf")),
        )
        self.registry.register(TallyCollector(self.operations, self.latency, self.cost))
        self.subscriptions = Gauge(
            "plugboard_graphql_subscriptions_active", "Subscriptions open now (this instance), by name and transport", ["operation", "transport"], registry=self.registry
        )
        self.registry.register(_PullCollector(app))
        self._names: set[str] = set()
        #: ``async def refresh()`` callables plugins returned from ``plugboard_metrics``.
        self.refreshers: list[tuple[str, Any]] = []

    def collect_plugins(self) -> None:
        """Call every plugin's ``plugboard_metrics`` with this registry (once, at start-up)."""
        pm = self.app[keys.PLUGIN_MANAGER]
        for plugin, refresh in pm.call_each("plugboard_metrics", app=self.app, registry=self.registry, configs=self.app[keys.PLUGIN_CONFIGS]):
            if refresh is not None:
                self.refreshers.append((plugin, refresh))

    async def refresh(self) -> None:
        for plugin, refresh in self.refreshers:
            try:
                await refresh()
            except Exception:  # noqa: BLE001 - one plugin's store must not take /metrics down
                logger.exception("protection: plugin %r's metrics refresh failed; scraping without it", plugin)

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
        from plugboard.plugins.protection.authfail import AUTH_FAILURES

        failures = self.app.get(AUTH_FAILURES)
        if failures is not None:
            yield CounterMetricFamily("plugboard_auth_failure_refusals", "Requests refused after too many failed authentications", value=failures.refusals)
        from plugboard.plugins.protection.guards import GUARDS

        guards = self.app.get(GUARDS)
        if guards is not None:
            yield CounterMetricFamily("plugboard_operations_timed_out", "Operations cancelled by protection.graphql.timeout", value=guards.timeouts)
            yield CounterMetricFamily(
                "plugboard_operations_concurrency_refusals", "Operations refused by protection.concurrency.max", value=guards.concurrency.refusals
            )
            yield GaugeMetricFamily("plugboard_operations_in_flight", "Queries and mutations running now (this instance)", value=guards.concurrency.total)


METRICS: web.AppKey[Metrics] = web.AppKey("plugboard.protection.metrics", Metrics)


def metrics_enabled(options: Any, admin_token: str | None) -> bool:
    """``protection.metrics.enabled``, with None meaning: when someone may scrape (an admin token, or ``public``)."""
    if options.enabled is not None:
        return options.enabled
    return bool(admin_token) or options.public


def registry(app: web.Application) -> CollectorRegistry | None:
    """The app's Prometheus registry (None without the protection plugin); plugins use the ``plugboard_metrics`` hook instead."""
    metrics = app.get(METRICS)
    return metrics.registry if metrics is not None else None


def metrics_step(app: web.Application) -> Any:
    m = app[METRICS]
    operations, latency = m.operations, m.latency

    from plugboard.plugins.protection.cost import ANALYSIS

    # Built after the limits step, which registers the analysis.
    analysis = app.get(ANALYSIS)

    def label(op: Any) -> str:
        # The request's operationName, else the document's (from the analysis' cache).
        name = op.operation_name
        if not name and op.parsed is not None:
            name = analysis.of(op)[2] if analysis is not None else op.document.operation_name
        return m.operation_label(name)

    def finished(op: Any, outcome: Any) -> None:
        kind = op.operation_type or "unknown"
        name = label(op)
        failed = not isinstance(outcome, dict) or bool(outcome.get("errors"))
        operations.inc((name, kind, "error" if failed else "ok"))
        latency.observe((name, kind), time.perf_counter() - op.state[_STARTED])

    async def subscription(op: Any, call_next: Any) -> Any:
        outcome = "error"
        try:
            result = await call_next(op)
            if isinstance(result, dict):
                # A refusal answered as a result rather than a stream.
                outcome = "error" if result.get("errors") else "ok"
                return result
            outcome = "ok"
            return _counted(result, m.subscriptions.labels(label(op), op.transport))
        finally:
            operations.inc((label(op), "subscription", outcome))

    # A plain function for queries and mutations: counted and timed by a done
    # callback, so no coroutine of this step's sits around their execution.
    def metrics(op: Any, call_next: Any) -> Any:
        if op.operation_type == "subscription":
            return subscription(op, call_next)
        op.state[_STARTED] = time.perf_counter()
        op.add_done_callback(finished)
        return call_next(op)

    return metrics


async def _counted(stream: Any, gauge: Any) -> Any:
    # An async generator: the gauge goes up when the transport starts
    # reading and down when it closes the stream (client gone, complete).
    gauge.inc()
    try:
        async for result in stream:
            yield result
    finally:
        gauge.dec()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def metrics_handler(request: web.Request) -> web.Response:
    app = request.app
    config = app[keys.PLUGIN_CONFIGS]["protection"]
    if not config.metrics.public:
        token = app[keys.CORE_CONFIG].server.admin_token
        sent = request.headers.get("Authorization", "")
        if not token or sent[:7].lower() != "bearer " or not hmac.compare_digest(sent[7:].strip().encode(), str(token).encode()):
            raise web.HTTPUnauthorized(text="metrics need Authorization: Bearer <server.admin_token>", headers={"WWW-Authenticate": "Bearer"})
    metrics = app[METRICS]
    await metrics.refresh()
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
