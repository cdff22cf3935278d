"""Usage analytics: per API key, user and operation name, per minute, in the records store.

Each operation is counted (requests, errors, cost, latency histogram) in a
dict in this process; a background task adds the dict to the table
``protection_usage`` every ``protection.usage.flush_interval`` and at
shutdown, so the request path never waits for the database. Rows are keyed
by ``(minute, api_key, user_id, operation)`` and written with an upsert that
*adds* to the row (``ON CONFLICT ... DO UPDATE SET n = n + excluded.n``, on
SQLite and PostgreSQL alike): instances sharing PostgreSQL add to the same
rows without reading them. Latency is a histogram of fixed buckets
(:data:`BUCKETS_MS`, one column each, counts per bucket, not cumulative),
so buckets add up across instances and minutes too. Rows older than
``protection.usage.retention`` are deleted hourly by each instance.

A flush that fails (the database is down) keeps its counts for the next
one, up to :data:`MAX_PENDING` rows; beyond that the oldest minute is
dropped with a logged warning rather than growing without bound.

``apiUsage`` (admins) reads the rows of a range and sums them per group
(:func:`query`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import time
from typing import Any, Iterable

import sqlalchemy as sa
from aiohttp import web

from plugboard.graphql.errors import GraphQLError
from plugboard.providers.records import UTCDateTime, utc

logger = logging.getLogger("plugboard.protection")

TABLE = "protection_usage"
#: Upper bounds of the latency buckets in milliseconds; the last catches the rest.
BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, math.inf)
BUCKET_COLUMNS = tuple(f"le_{int(b)}ms" if b != math.inf else "le_inf" for b in BUCKETS_MS)
COUNTERS = ("requests", "errors", "cost", "latency_ms_sum", *BUCKET_COLUMNS)
#: Rows kept in memory while the store cannot be written.
MAX_PENDING = 100_000
#: Groups one ``apiUsage`` answer may hold.
MAX_GROUPS = 10_000
CLEANUP_EVERY = 3600.0
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,99}$")

GROUPS = ("MINUTE", "HOUR", "DAY", "KEY", "USER", "OPERATION")
_STEP = {"MINUTE": 60, "HOUR": 3600, "DAY": 86400}

Key = tuple[dt.datetime, str, str, str]


def define_tables(metadata: sa.MetaData) -> None:
    sa.Table(
        TABLE,
        metadata,
        sa.Column("minute", UTCDateTime(), primary_key=True),
        # '' for none: primary-key columns cannot be NULL.
        sa.Column("api_key", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("operation", sa.String(100), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False, default=0),
        sa.Column("errors", sa.BigInteger, nullable=False, default=0),
        sa.Column("cost", sa.BigInteger, nullable=False, default=0),
        sa.Column("latency_ms_sum", sa.Float, nullable=False, default=0.0),
        *(sa.Column(name, sa.BigInteger, nullable=False, default=0) for name in BUCKET_COLUMNS),
    )


def operation_label(name: str | None) -> str:
    """The stored operation name: ``anonymous``, the name, or ``other`` for one that is not a GraphQL name."""
    if not name:
        return "anonymous"
    return name if _NAME.match(name) else "other"


def _minute(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts - ts % 60, dt.timezone.utc)


class UsageRecorder:
    """Per-minute counts of this process, flushed to the records store in batches."""

    def __init__(self, records: Any, metadata: sa.MetaData, *, retention: float) -> None:
        self.records = records
        self.table = metadata.tables[TABLE]
        self.retention = retention
        self.pending: dict[Key, list[float]] = {}
        self.flushes = 0
        self.flush_errors = 0
        self._cleaned_at = float("-inf")
        self._lock = asyncio.Lock()

    def record(self, *, api_key: str | None, user: str | None, operation: str, latency: float | None, cost: int, error: bool) -> None:
        """Count one operation (``latency`` in seconds; None for a subscription, which has none)."""
        key = (_minute(time.time()), api_key or "", (user or "")[:200], operation)
        row = self.pending.get(key)
        if row is None:
            if len(self.pending) >= MAX_PENDING:
                oldest = min(self.pending)
                del self.pending[oldest]
                logger.warning("protection: usage analytics could not be written for a while; dropped the counts of %s", oldest[0].isoformat())
            row = self.pending[key] = [0.0] * len(COUNTERS)
        row[0] += 1
        row[1] += error
        row[2] += cost
        if latency is not None:
            ms = latency * 1000.0
            row[3] += ms
            for i, bound in enumerate(BUCKETS_MS):
                if ms <= bound:
                    row[4 + i] += 1
                    break

    async def flush(self) -> None:
        """Add the pending counts to the table (kept for the next flush if that fails)."""
        async with self._lock:
            batch, self.pending = self.pending, {}
            if batch:
                try:
                    await self._write(batch)
                    self.flushes += 1
                except Exception as e:  # noqa: BLE001 - any store failure: keep the counts, say so once per flush
                    self.flush_errors += 1
                    logger.warning("protection: writing usage analytics failed (%s); retrying at the next flush", e)
                    for key, row in batch.items():
                        into = self.pending.setdefault(key, [0.0] * len(COUNTERS))
                        for i, value in enumerate(row):
                            into[i] += value
            if time.monotonic() - self._cleaned_at >= CLEANUP_EVERY:
                await self.cleanup()

    async def _write(self, batch: dict[Key, list[float]]) -> None:
        if self.records.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        rows = [
            {"minute": k[0], "api_key": k[1], "user_id": k[2], "operation": k[3], **{c: (v if c == "latency_ms_sum" else int(v)) for c, v in zip(COUNTERS, row)}}
            for k, row in batch.items()
        ]
        stmt = insert(self.table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["minute", "api_key", "user_id", "operation"],
            set_={c: self.table.c[c] + stmt.excluded[c] for c in COUNTERS},
        )
        async with self.records.begin() as conn:
            await conn.execute(stmt, rows)

    async def cleanup(self) -> int:
        """Delete minutes older than the retention; how many rows."""
        self._cleaned_at = time.monotonic()
        cutoff = _minute(time.time() - self.retention)
        try:
            async with self.records.begin() as conn:
                result = await conn.execute(sa.delete(self.table).where(self.table.c.minute < cutoff))
        except Exception as e:  # noqa: BLE001 - retried at the next hour's flush
            logger.warning("protection: deleting old usage analytics failed (%s)", e)
            return 0
        return result.rowcount or 0

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    async def query(
        self,
        *,
        start: dt.datetime,
        end: dt.datetime,
        group_by: Iterable[str],
        api_key: str | None = None,
        user: str | None = None,
        operation: str | None = None,
    ) -> list[dict[str, Any]]:
        """Sums of the rows in ``[start, end)`` per group (a time step and/or KEY, USER, OPERATION)."""
        groups = tuple(dict.fromkeys(group_by))
        steps = [g for g in groups if g in _STEP]
        if len(steps) > 1:
            raise GraphQLError(f"groupBy takes one of MINUTE, HOUR, DAY, not {' and '.join(steps)}", "BAD_USER_INPUT")
        start, end = utc(start), utc(end)
        if end <= start:
            raise GraphQLError("'to' must be after 'from'", "BAD_USER_INPUT")
        step = _STEP[steps[0]] if steps else None
        if step is not None and (end - start).total_seconds() / step > MAX_GROUPS:
            raise GraphQLError(f"more than {MAX_GROUPS} {steps[0].lower()}s in the range: narrow it or group coarser", "BAD_USER_INPUT")
        t = self.table
        query = sa.select(t).where(t.c.minute >= start, t.c.minute < end)
        if api_key is not None:
            query = query.where(t.c.api_key == api_key)
        if user is not None:
            query = query.where(t.c.user_id == user)
        if operation is not None:
            query = query.where(t.c.operation == operation)
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        async with self.records.connect() as conn:
            result = await conn.stream(query)
            async for row in result:
                minute = row.minute
                if step is not None:
                    ts = minute.timestamp()
                    bucket = dt.datetime.fromtimestamp(ts - ts % step, dt.timezone.utc)
                else:
                    bucket = start
                group = (
                    bucket,
                    row.api_key if "KEY" in groups else None,
                    row.user_id if "USER" in groups else None,
                    row.operation if "OPERATION" in groups else None,
                )
                into = out.get(group)
                if into is None:
                    if len(out) >= MAX_GROUPS:
                        raise GraphQLError(f"more than {MAX_GROUPS} groups: narrow the range or the grouping", "BAD_USER_INPUT")
                    into = out[group] = dict.fromkeys(COUNTERS, 0)
                for column in COUNTERS:
                    into[column] += getattr(row, column)
        ordered = sorted(out.items(), key=lambda item: (item[0][0], *("" if v is None else v for v in item[0][1:])))
        return [_as_graphql(group, sums) for group, sums in ordered]


def _as_graphql(group: tuple[Any, ...], sums: dict[str, Any]) -> dict[str, Any]:
    observed = sum(sums[c] for c in BUCKET_COLUMNS)
    return {
        "start": group[0],
        # '' is how "none" is stored; the API says null.
        "key": group[1] or None,
        "user": group[2] or None,
        "operation": group[3],
        "requests": int(sums["requests"]),
        "errors": int(sums["errors"]),
        "cost": int(sums["cost"]),
        "latencyAvgMs": sums["latency_ms_sum"] / observed if observed else None,
        "latency": [{"leMs": None if b == math.inf else float(b), "count": int(sums[c])} for b, c in zip(BUCKETS_MS, BUCKET_COLUMNS)],
    }


USAGE: web.AppKey[UsageRecorder] = web.AppKey("plugboard.protection.usage", UsageRecorder)


#: ``operation.state`` key: when the usage step saw the operation.
_STARTED = "protection.usage.started"


def usage_step(app: Any) -> Any:
    """The step counting every operation (refused ones as errors) in ``app[USAGE]`` (made at start-up)."""
    from plugboard.plugins.protection.cost import ANALYSIS

    def finished(op: Any, outcome: Any) -> None:
        recorder, analysis = app[USAGE], app.get(ANALYSIS)
        # A subscription's outcome is its stream: not an error.
        error = isinstance(outcome, BaseException) or (isinstance(outcome, dict) and bool(outcome.get("errors")))
        subscription = op.operation_type == "subscription"
        cost, name = 0, op.operation_name
        if analysis is not None and op.parsed is not None:
            try:
                _depth, cost, name = analysis.of(op)
            except GraphQLError:
                # No root type for the operation: nothing to cost, counted at 0.
                cost, name = 0, op.operation_name
        context = op.context
        api_key = getattr(context, "api_key", None)
        identity = getattr(context, "identity", None)
        user = identity.get("id") if isinstance(identity, dict) else getattr(identity, "id", identity)
        recorder.record(
            api_key=api_key.id if api_key is not None else None,
            user=None if user is None else str(user),
            operation=operation_label(name),
            latency=None if subscription else time.perf_counter() - op.state[_STARTED],
            cost=cost,
            error=error,
        )

    # A plain function: it observes through a done callback, adding no
    # coroutine around the execution.
    def usage(op: Any, call_next: Any) -> Any:
        op.state[_STARTED] = time.perf_counter()
        op.add_done_callback(finished)
        return call_next(op)

    return usage
