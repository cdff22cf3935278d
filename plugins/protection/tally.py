"""Per-operation series kept in plain dicts and handed to Prometheus when ``/metrics`` is scraped.

Every GraphQL operation updates a counter and one or two histograms. With
prometheus-client's labelled children each update takes a lock (two for a
histogram observation) for threads this server does not have: on one event
loop a dict update is atomic already. The exposition is the same series
(``*_total``, ``*_bucket{le=...}``, ``*_count``, ``*_sum``) without the
``*_created`` timestamps.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, Sequence

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

INF = float("inf")


class CounterTally:
    """A labelled counter: ``inc(labels)``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class HistogramTally:
    """A labelled histogram: ``observe(labels, value)``; per series one count per bucket, then the sum."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        bounds = [float(b) for b in buckets]
        if bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 1)
        # Prometheus' buckets are inclusive (le): the first bound >= value.
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, row in list(self.series.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip(self.bounds, row):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        return family


class TallyCollector:
    """Registers tallies with a ``CollectorRegistry``; they are read at scrape time."""

    def __init__(self, *tallies: CounterTally | HistogramTally) -> None:
        self.tallies = tallies

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for tally in self.tallies:
            yield tally.family()
