"""The jobs plugin's Prometheus series, through the core's ``plugboard_metrics`` hook.

``plugboard_jobs{status}``: jobs in the job store by status — the whole
deployment's (every instance reads the same store, so take ``max()`` across
instances, not ``sum()``). Read before a scrape, at most every
:data:`REFRESH` seconds, with the store's ``counts()``. The job store
contract counts per status only; a ``type`` label needs a count by type and
status in that contract (both stores keep the type indexed).
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

    gauge = Gauge("plugboard_jobs", "Jobs in the job store by status (the whole deployment)", ["status"], registry=registry)
    read_at = [float("-inf")]

    async def refresh() -> None:
        jobs = app.get(JOBS)
        if jobs is None or time.monotonic() - read_at[0] < REFRESH:
            return
        for status, n in (await jobs.counts()).items():
            gauge.labels(getattr(status, "value", str(status))).set(n)
        read_at[0] = time.monotonic()

    return refresh
