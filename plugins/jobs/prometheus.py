"""The jobs plugin's Prometheus series, through the core's ``plugboard_metrics`` hook.

``plugboard_jobs{type,status}``: jobs in the job store by task type and
status — the whole deployment's (every instance reads the same store, so take
``max()`` across instances, not ``sum()``; ``sum by (status)`` of one
instance's series gives the totals). Read before a scrape, at most every
:data:`REFRESH` seconds, with the store's ``counts_by_type()``.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

#: Seconds a read of the store is reused for: frequent scrapes must not load it.
REFRESH = 5.0


def register(app: Any, registry: Any) -> Callable[[], Awaitable[None]]:
    """Add ``plugboard_jobs`` to the app's registry; returns the refresh to await before a scrape."""
    from prometheus_client import Gauge

    from plugboard.plugins.jobs.keys import JOBS

    gauge = Gauge("plugboard_jobs", "Jobs in the job store by task type and status (the whole deployment)", ["type", "status"], registry=registry)
    read_at = [float("-inf")]

    async def refresh() -> None:
        jobs = app.get(JOBS)
        if jobs is None or time.monotonic() - read_at[0] < REFRESH:
            return
        for (jtype, status), n in (await jobs.counts_by_type()).items():
            gauge.labels(jtype, getattr(status, "value", str(status))).set(n)
        read_at[0] = time.monotonic()

    return refresh
