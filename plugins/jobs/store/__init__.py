"""The job store provider kind (``jobstore``): where job records live.

Two implementations ship with the jobs plugin, chosen by ``jobs.store``:
``records`` (the ``jobs_jobs`` table in the records store: SQLite or
PostgreSQL) and ``redis`` (a hash per job plus sorted-set indexes). Both
pass one contract test (tests/plugins/jobs/test_store.py); the protocol is the core's (:mod:`plugboard.providers.jobstore`); a third-party
store declares ``ProviderSpec(kind="jobstore", name=..., factory=...,
config=StoreOptions)`` and should pass it too.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from plugboard.plugins.jobs.model import FINISHED, Job
from plugboard.providers.jobstore import JobStore
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
