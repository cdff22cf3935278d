"""The reconcile: jobs whose broker message was lost are sent again.

With the ``redis`` broker a job's record and its message are one command
only when the job store is the same Redis and no shared live-update event
must go out in between (:meth:`Jobs.enqueue <plugboard.plugins.jobs.api.Jobs.enqueue>`,
``retry``). Otherwise — the ``records`` store, a ``redis`` pubsub — a process
that dies between writing the record and adding the message leaves a job
PENDING that no worker will ever read. Each ``plugboard worker`` therefore,
at start and every ``jobs.reconcile_interval``, takes the oldest PENDING
jobs unchanged for ``jobs.reconcile_grace`` and the RETRYING ones due that
long ago (a bounded scan: ``jobs.reconcile_batch`` of each), and the broker
adds back, in one atomic script, those with neither a stream entry nor a
delayed retry (:meth:`RedisBroker.resend_missing
<plugboard.plugins.jobs.brokers.redis.RedisBroker.resend_missing>`). The
grace keeps a job being enqueued right now from being sent twice; a
per-job ``SET NX`` marker keeps several workers from re-sending it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
import redis.exceptions

logger = logging.getLogger("plugboard.jobs.reconcile")


@attrs.define(frozen=True, kw_only=True)
class ReconcileSettings:
    #: Seconds between two reconciles of one worker (0: only at start).
    interval: float = 30.0
    #: A PENDING job unchanged this long (a RETRYING one due this long) counts as lost if it has no message.
    grace: float = 60.0
    #: The most PENDING (and RETRYING) records one reconcile looks at, oldest first.
    batch: int = 500
    #: The stream and the delayed set are scanned only while this short (else the reconcile waits for a later turn).
    scan_limit: int = 10_000


async def reconcile_once(store: Any, broker: Any, tasks: Any, settings: ReconcileSettings, *, now: float | None = None) -> list[str]:
    """One reconcile; the ids sent again."""
    before = (time.time() if now is None else now) - settings.grace
    waiting_since = getattr(store, "waiting_since", None)
    if waiting_since is None:
        # A third-party job store without the method: nothing to reconcile from.
        logger.warning("jobs: the job store %s cannot list waiting jobs; no reconcile", type(store).__name__)
        return []
    candidates = [(job.type, job.id) for job in await waiting_since(before, settings.batch) if job.type in tasks]
    if not candidates:
        return []
    sent = await broker.resend_missing(candidates, scan_limit=settings.scan_limit, marker_ttl=settings.grace)
    if sent is None:
        logger.info("jobs: reconcile skipped: more than %d queued messages", settings.scan_limit)
        return []
    if sent:
        logger.warning("jobs: %d job(s) had lost their queue message and were sent again: %s", len(sent), ", ".join(sent))
    return sent


async def reconcile_forever(store: Any, broker: Any, tasks: Any, settings: ReconcileSettings) -> None:
    """:func:`reconcile_once` now and every ``settings.interval`` seconds (a worker's background task)."""
    if not hasattr(store, "waiting_since"):
        await reconcile_once(store, broker, tasks, settings)  # says why, once
        return
    while True:
        try:
            await reconcile_once(store, broker, tasks, settings)
        except (redis.exceptions.RedisError, OSError) as e:
            logger.warning("jobs: reconcile failed: %s", e)
        except Exception:  # noqa: BLE001 - the records store's own errors; the next turn tries again
            logger.exception("jobs: reconcile failed")
        if settings.interval <= 0:
            return
        await asyncio.sleep(settings.interval)
