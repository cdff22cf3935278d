"""The job store provider kind (``jobstore``): where job records live.

Two implementations ship with the jobs plugin, chosen by ``jobs.store``:
``records`` (the ``jobs_jobs`` table in the records store: SQLite or
PostgreSQL) and ``redis`` (a hash per job plus sorted-set indexes). Both
pass one contract test (tests/plugins/jobs/test_store.py); a third-party
store declares ``ProviderSpec(kind="jobstore", name=..., factory=...,
config=StoreOptions)`` and should pass it too.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Protocol, runtime_checkable

import attrs

from plugboard.plugins.jobs.model import FINISHED, Job, JobStatus
from plugboard.providers.registry import ProviderSpec

#: Fields ``update`` may change (``id``, ``type``, ``created_at`` and ``owner`` never change).
MUTABLE_FIELDS = frozenset(
    {"status", "progress", "args", "result", "error", "attempts", "max_attempts", "updated_at", "started_at", "completed_at", "run_at"}
)


@attrs.define(frozen=True, kw_only=True)
class StoreOptions:
    """What every job store is built with."""

    #: Key prefix (Redis) — the ``jobs.queue`` setting.
    prefix: str = "plugboard:jobs"
    #: A Redis URL of the jobs plugin's own (``jobs.redis``); None: the core ``redis.url`` client.
    redis_url: str | None = None


@attrs.define(frozen=True)
class JobPage:
    """One page of a job listing, newest first."""

    jobs: list[Job]
    #: The cursor to pass as ``after`` for the next page (the last job's id), None when empty.
    end_cursor: str | None
    has_next_page: bool
    #: Jobs matching the filters, over all pages.
    total_count: int


@runtime_checkable
class JobStore(Protocol):
    """Job records: create, read, change under a status condition, list, count, purge.

    Implementer's manual:

    - Lifecycle: ``await start()`` (connect; the ``records`` store needs the
      app's records store started, the ``redis`` one the shared Redis client
      or its own URL), ``await close()``, ``await check()`` (one round trip,
      raises when the backend does not answer; used by ``/readyz``).
    - Ids are UUIDv7 strings (``plugboard.plugins.jobs.ids``): ordering by
      id is ordering by creation, which listings rely on (newest first,
      cursor = the last id of the page, exclusive).
    - :meth:`update` is the only way a record changes, and it is atomic: the
      status condition (``when``) is checked and the changes applied in one
      step, so a cancel and a worker finishing the job cannot both win.
      ``add_attempt`` increments ``attempts`` in the same step.
    - Values are JSON values (``args``, ``result``) or plain numbers and
      strings; ``None`` is stored and read back as ``None``.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def create(self, job: Job) -> None:
        """Store a new job (its id is new)."""

    async def get(self, id: str) -> Job | None:
        """The job, or None for an unknown id."""

    async def update(
        self,
        id: str,
        changes: Mapping[str, Any],
        *,
        when: Collection[JobStatus] | None = None,
        add_attempt: bool = False,
    ) -> tuple[Job | None, bool]:
        """Apply ``changes`` (field -> value) if the job's status is in ``when`` (any if None).

        :returns: ``(job, applied)``: the job as it is afterwards (None for an
            unknown id) and whether the changes were applied.
        """

    async def list(self, *, status: JobStatus | None = None, type: str | None = None, first: int = 20, after: str | None = None) -> JobPage:
        """Jobs newest first, filtered by status and/or type, ``first`` after the cursor ``after``."""

    async def counts(self) -> dict[JobStatus, int]:
        """Jobs per status; every status present, zeros included."""

    async def delete_finished_before(self, ts: float) -> int:
        """Delete COMPLETED/FAILED/CANCELLED jobs whose ``completed_at`` is before ``ts``; how many."""


def check_changes(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise ValueError(f"job fields that cannot change: {', '.join(sorted(unknown))}")


PROVIDER_SPECS = (
    ProviderSpec(
        kind="jobstore",
        name="records",
        factory="plugboard.plugins.jobs.store.records:RecordsJobStore",
        config=StoreOptions,
        description="job records in the records store's jobs_jobs table (SQLite, PostgreSQL)",
    ),
    ProviderSpec(
        kind="jobstore",
        name="redis",
        factory="plugboard.plugins.jobs.store.redis:RedisJobStore",
        config=StoreOptions,
        requires="redis",
        description="job records as Redis hashes with sorted-set indexes",
    ),
)

__all__ = ["FINISHED", "JobPage", "JobStore", "MUTABLE_FIELDS", "PROVIDER_SPECS", "StoreOptions", "check_changes"]
