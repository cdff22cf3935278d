"""The email plugin's Prometheus series, through the core's ``plugboard_metrics`` hook.

``plugboard_email_events{event}``: events in the email events table by event
(``sent``, ``failed``, ``delivered``, ``opened``, ``clicked``,
``bounced:hard`` ...) — the whole deployment's, as every instance shares the
records store (take ``max()`` across instances). ``sent`` and ``failed`` are
recorded with ``email.features.analytics``; provider webhooks' events always.
Read before a scrape, at most every :data:`REFRESH` seconds.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

#: Seconds a read of the table is reused for: frequent scrapes must not load it.
REFRESH = 5.0


def register(app: Any, registry: Any) -> Callable[[], Awaitable[None]]:
    """Add ``plugboard_email_events`` to the app's registry; returns the refresh to await before a scrape."""
    import sqlalchemy as sa
    from prometheus_client import Gauge

    from plugboard import keys
    from plugboard.plugins.email import store

    gauge = Gauge("plugboard_email_events", "Email events recorded, by event (the whole deployment)", ["event"], registry=registry)
    read_at = [float("-inf")]

    async def refresh() -> None:
        if time.monotonic() - read_at[0] < REFRESH:
            return
        table = store.table(app, "events")
        async with app[keys.RECORDS].connect() as conn:
            rows = (await conn.execute(sa.select(table.c.event, sa.func.count()).group_by(table.c.event))).all()
        for event, n in rows:
            gauge.labels(event).set(n)
        read_at[0] = time.monotonic()

    return refresh
