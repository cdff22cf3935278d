"""The cache plugin's Prometheus series, through the core's ``plugboard_metrics`` hook.

``plugboard_cache_{hits,misses}_total{layer}`` and
``plugboard_cache_hit_ratio{layer}`` (hits / lookups since start; absent
before the first lookup), read at scrape time from the counters every
provider keeps anyway (:mod:`.stats`): nothing is added to the request path.
"""

from __future__ import annotations

from typing import Any, Iterator


class _CacheCollector:
    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from plugboard.plugins.cache import metrics

        layers = metrics(self.app)
        if not layers:
            return
        hits = CounterMetricFamily("plugboard_cache_hits", "Cache hits by layer", labels=["layer"])
        misses = CounterMetricFamily("plugboard_cache_misses", "Cache misses by layer", labels=["layer"])
        ratio = GaugeMetricFamily("plugboard_cache_hit_ratio", "Hits per lookup since start, by layer", labels=["layer"])
        for layer, counts in layers.items():
            hit, miss = counts.get("hits", 0), counts.get("misses", 0)
            hits.add_metric([layer], hit)
            misses.add_metric([layer], miss)
            if hit + miss:
                ratio.add_metric([layer], hit / (hit + miss))
        yield hits
        yield misses
        yield ratio


def register(app: Any, registry: Any) -> None:
    """Add the cache collector to the app's registry."""
    registry.register(_CacheCollector(app))
