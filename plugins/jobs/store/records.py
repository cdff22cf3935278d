"""The ``records`` job store: the ``jobs_jobs`` table in the app's records store.

SQLite for one server (the embedded default), PostgreSQL for several. Ids are
time-ordered (UUIDv7), so "newest first" is ``ORDER BY id DESC`` on the primary
key and the status/type indexes end in ``id``.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import sqlalchemy as sa

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.plugins.jobs.model import FINISHED, Job, JobStatus
from plugboard.plugins.jobs.store import JobPage, StoreOptions, check_changes

TABLE = "jobs_jobs"


def define_table(metadata: sa.MetaData) -> sa.Table:
    """Add ``jobs_jobs`` to the records store's metadata (``plugboard_tables``)."""
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, default=0),
        sa.Column("args", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("max_attempts", sa.Integer, nullable=False, default=1),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double, nullable=True),
        sa.Column("completed_at", sa.Double, nullable=True),
        sa.Column("run_at", sa.Double, nullable=True),
        sa.Index("ix_jobs_jobs_status", "status", "id"),
        sa.Index("ix_jobs_jobs_type", "type", "id"),
    )


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["args"] = data["args"] or {}
    return Job.from_dict(data)


def _row(job: Job) -> dict[str, Any]:
    data = job.to_dict()
    return data


class RecordsJobStore:
    """:class:`~plugboard.plugins.jobs.store.JobStore` on the records store (SQLAlchemy Core).

    :param options: unused here but for symmetry (the table name is fixed: ``jobs_jobs``).
    :param app: the application (or a mapping) holding ``plugboard.keys.RECORDS``
        (started before this store) and ``plugboard.keys.METADATA`` with the table.
    """

    def __init__(self, options: StoreOptions | None = None, app: Mapping[Any, Any] | None = None) -> None:
        self.options = options or StoreOptions()
        self._app = app
        self._records: Any = None
        self._table: sa.Table | None = None

    async def start(self) -> None:
        records = self._app.get(keys.RECORDS) if self._app is not None else None
        if records is None:
            raise ProviderError("jobs.store: records needs the records store")
        table = records.metadata.tables.get(TABLE)
        if table is None:
            raise ProviderError(f"jobs.store: records: the {TABLE} table is not defined")
        self._records, self._table = records, table

    async def close(self) -> None:
        # The records store belongs to the app and is closed by it.
        self._records = None

    async def check(self) -> None:
        await self._records.check()

    @property
    def table(self) -> sa.Table:
        assert self._table is not None, "start() first"
        return self._table

    async def create(self, job: Job) -> None:
        async with self._records.begin() as conn:
            await conn.execute(sa.insert(self.table).values(**_row(job)))

    async def get(self, id: str) -> Job | None:
        async with self._records.connect() as conn:
            row = (await conn.execute(sa.select(self.table).where(self.table.c.id == id))).first()
        return None if row is None else _job(row)

    async def update(
        self,
        id: str,
        changes: Mapping[str, Any],
        *,
        when: Collection[JobStatus] | None = None,
        add_attempt: bool = False,
    ) -> tuple[Job | None, bool]:
        check_changes(changes)
        t = self.table
        values: dict[str, Any] = {k: (v.value if isinstance(v, JobStatus) else v) for k, v in changes.items()}
        if add_attempt:
            values["attempts"] = t.c.attempts + 1
        condition = t.c.id == id
        if when is not None:
            condition = sa.and_(condition, t.c.status.in_([JobStatus(s).value for s in when]))
        async with self._records.begin() as conn:
            applied = (await conn.execute(sa.update(t).where(condition).values(**values))).rowcount > 0
            row = (await conn.execute(sa.select(t).where(t.c.id == id))).first()
        return (None if row is None else _job(row)), applied

    def _filters(self, status: JobStatus | None, type: str | None) -> list[Any]:
        t = self.table
        out = []
        if status is not None:
            out.append(t.c.status == JobStatus(status).value)
        if type is not None:
            out.append(t.c.type == type)
        return out

    async def list(self, *, status: JobStatus | None = None, type: str | None = None, first: int = 20, after: str | None = None) -> JobPage:
        t = self.table
        filters = self._filters(status, type)
        query = sa.select(t).where(*filters)
        if after is not None:
            query = query.where(t.c.id < after)
        query = query.order_by(t.c.id.desc()).limit(first + 1)
        count = sa.select(sa.func.count()).select_from(t).where(*filters)
        async with self._records.connect() as conn:
            rows = (await conn.execute(query)).all()
            total = (await conn.execute(count)).scalar_one()
        jobs = [_job(r) for r in rows[:first]]
        return JobPage(jobs, jobs[-1].id if jobs else None, len(rows) > first, total)

    async def waiting_since(self, before: float, limit: int) -> list[Job]:
        """PENDING jobs last changed before ``before`` and RETRYING ones due
        before it, oldest first, at most ``limit`` of each (the broker's reconcile)."""
        t = self.table
        queries = (
            sa.select(t).where(t.c.status == JobStatus.PENDING.value, t.c.updated_at < before),
            sa.select(t).where(t.c.status == JobStatus.RETRYING.value, t.c.run_at < before),
        )
        out: list[Job] = []
        async with self._records.connect() as conn:
            for query in queries:
                out += [_job(r) for r in (await conn.execute(query.order_by(t.c.id).limit(limit))).all()]
        return out

    async def counts(self) -> dict[JobStatus, int]:
        t = self.table
        async with self._records.connect() as conn:
            rows = (await conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status))).all()
        out = {s: 0 for s in JobStatus}
        for status, n in rows:
            out[JobStatus(status)] = n
        return out

    async def counts_by_type(self, types: Collection[str]) -> dict[tuple[str, JobStatus], int]:
        t = self.table
        async with self._records.connect() as conn:
            rows = (await conn.execute(sa.select(t.c.type, t.c.status, sa.func.count()).group_by(t.c.type, t.c.status))).all()
        out = {(jtype, s): 0 for jtype in types for s in JobStatus}
        for jtype, status, n in rows:
            out[(jtype, JobStatus(status))] = n
        return out

    async def delete_finished_before(self, ts: float) -> int:
        t = self.table
        async with self._records.begin() as conn:
            result = await conn.execute(
                sa.delete(t).where(t.c.status.in_([s.value for s in FINISHED]), t.c.completed_at < ts)
            )
        return result.rowcount
