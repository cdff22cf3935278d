"""The realtime plugin's Prometheus series, through the core's ``plugboard_metrics`` hook.

``plugboard_realtime_connections{pool}``: open connections of this instance
by pool — ``websocket`` (GraphQL over WebSocket), ``sse`` (GraphQL over SSE,
both modes, reservations included), ``channels.ws`` and ``channels.events``
(direct channels). Read at scrape time from the connection limiter, which
counts them anyway. Subscriptions are counted per operation by whoever runs
the operation steps (the protection plugin's
``plugboard_graphql_subscriptions_active``), on every transport alike.
"""

from __future__ import annotations

from typing import Any, Iterator


class _ConnectionsCollector:
    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from plugboard.plugins.realtime.limiter import CONNECTION_LIMITER

        limiter = self.app.get(CONNECTION_LIMITER)
        gauge = GaugeMetricFamily("plugboard_realtime_connections", "Open WebSocket and SSE connections (this instance), by pool", labels=["pool"])
        for pool in limiter.limits if limiter is not None else ():
            gauge.add_metric([pool], sum(limiter.open(pool).values()))
        yield gauge


def register(app: Any, registry: Any) -> None:
    """Add the connection gauges to the app's registry."""
    registry.register(_ConnectionsCollector(app))
