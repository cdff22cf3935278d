"""The job record: what every enqueued job looks like to the API, GraphQL and the dashboard."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import attrs


class JobStatus(str, enum.Enum):
    """The seed's four statuses plus RETRYING (waiting out a backoff) and CANCELLED."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@attrs.define(kw_only=True)
class Job:
    """One job. Timestamps are Unix seconds (floats); None until they happen."""

    id: str
    type: str
    status: JobStatus = JobStatus.PENDING
    #: 0 to 100, reported by the task.
    progress: int = 0
    args: dict[str, Any] = attrs.field(factory=dict)
    result: Any = None
    #: The last attempt's error ("ValueError: bad input"), kept when FAILED.
    error: str | None = None
    #: Attempts started so far (1 while the first runs).
    attempts: int = 0
    max_attempts: int = 1
    #: The identity that enqueued it through GraphQL, if any: it may read and watch the job.
    owner: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    completed_at: float | None = None
    #: When a RETRYING job's next attempt is due.
    run_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (status as its name): pubsub payloads and storage."""
        names = _NAMES.get(type(self))
        if names is None:
            names = _NAMES[type(self)] = tuple(f.name for f in attrs.fields(type(self)))
        # attrs.asdict(recurse=False), without its per-field filter calls: events carry it twice per job.
        data = {name: getattr(self, name) for name in names}
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        fields = _FIELDS.get(cls)
        if fields is None:
            fields = _FIELDS[cls] = frozenset(f.name for f in attrs.fields(cls))
        values = {k: v for k, v in data.items() if k in fields}
        values["status"] = JobStatus(values["status"])
        return cls(**values)


#: Field names per class (Job and subclasses): to_dict and from_dict run twice per job in a worker.
_FIELDS: dict[type, frozenset[str]] = {}
_NAMES: dict[type, tuple[str, ...]] = {}


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2026-11-24T23:05:01.123456+00:00``), for GraphQL and the dashboard."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()
