"""``jobs:`` settings — the seed's QueueConfig (redis, concurrency, retries, dashboard,
jobs.*) plus what a broker, its workers and the scheduler need.

Runs embedded by default: the ``memory`` broker executes jobs inside the server
and job records live in the records store (SQLite). ``broker: redis`` moves
jobs to ``plugboard worker`` processes sharing one Redis.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Secret
from plugboard.plugins.jobs.builtin import config as builtin


@attrs.define(frozen=True, kw_only=True)
class JobsRedisConfig:
    """The seed's ``QueueConfig.redis``. All null: use the core ``redis.url``."""

    url: Secret | None = None
    host: str | None = None
    port: int = attrs.field(default=6379, validator=validators.port)
    password: Secret | None = None
    db: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    def resolved_url(self) -> str | None:
        """``url``, else one built from ``host``/``port``/``password``/``db``, else None."""
        if self.url:
            return self.url
        if self.host:
            auth = f":{self.password}@" if self.password else ""
            return f"redis://{auth}{self.host}:{self.port}/{self.db}"
        return None


@attrs.define(frozen=True, kw_only=True)
class JobTypesConfig:
    """The seed's ``QueueConfig.jobs``: each built-in job type switchable."""

    email: bool = True
    file_processing: bool = True
    data_export: bool = True
    reports: bool = True
    cleanup: bool = True


@attrs.define(frozen=True, kw_only=True)
class ScheduleConfig:
    """One cron schedule: ``{task: cleanup, cron: "0 3 * * *", args: {}}``."""

    task: str
    cron: str
    args: dict[str, Any] = attrs.field(factory=dict)
    #: A tick missed while no scheduler ran: skipped (false), or fired once when a scheduler starts (true).
    catch_up: bool = False


def _default_schedules() -> list[ScheduleConfig]:
    return [ScheduleConfig(task="cleanup", cron="0 3 * * *")]


@attrs.define(frozen=True, kw_only=True)
class JobsConfig:
    #: Provider kind ``broker``: ``memory`` (jobs run inside the server) or ``redis``.
    broker: str = "memory"
    #: Where job records live: ``auto`` (redis with the redis broker, else records), ``records``, ``redis``.
    store: str = "auto"
    redis: JobsRedisConfig = JobsRedisConfig()
    #: The Redis stream name and key prefix.
    queue: str = attrs.field(default="plugboard:jobs", validator=attrs.validators.min_len(1))
    #: Jobs at once per worker (and in the server with the memory broker). Env alias QUEUE_CONCURRENCY.
    concurrency: int = attrs.field(default=10, validator=validators.positive)
    #: Retries after the first attempt, unless a task's @retry says otherwise.
    retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: The first retry's delay; doubles each retry, with full jitter.
    backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    #: A delivered job whose worker stopped heart-beating this long goes to another worker.
    idle_timeout: Duration = attrs.field(default=60.0, validator=validators.positive)
    #: Redis broker: each worker sends again, at start and this often, jobs whose queue message was lost (0: at start only).
    reconcile_interval: Duration = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    #: ...when PENDING and unchanged this long (RETRYING: due this long ago); a job being enqueued now is never sent twice.
    reconcile_grace: Duration = attrs.field(default=60.0, validator=validators.positive)
    #: ``plugboard worker`` on SIGTERM: running jobs may finish within this.
    shutdown_grace: Duration = 30.0
    #: Finished job records older than this are removed by the cleanup job.
    retention: Duration = 7 * 86400.0
    #: The dashboard page (env alias QUEUE_DASHBOARD).
    dashboard: bool = False
    dashboard_path: str = attrs.field(default="/jobs", validator=validators.url_path)
    #: Run cron schedules inside ``plugboard serve``: ``auto`` (= with the memory broker), true or false.
    scheduler: Literal["auto"] | bool = "auto"
    jobs: JobTypesConfig = JobTypesConfig()
    schedules: list[ScheduleConfig] = attrs.field(factory=_default_schedules)

    # ------------------------------------------------------------------
    # Built-in job types' own sub-sections (owned by the built-in job types,
    # plugins/jobs/builtin): add fields below this line.
    # ------------------------------------------------------------------
    #: Where exports, reports and processed images are stored (provider kind ``storage``).
    files: builtin.FilesConfig = builtin.FilesConfig()
    #: ``send-email`` delivery (provider kind ``mailer``: ``outbox`` or ``smtp``).
    email: builtin.EmailConfig = builtin.EmailConfig()
    #: ``process-image`` limits.
    images: builtin.ImagesConfig = builtin.ImagesConfig()
    #: Datasets (GraphQL queries) for ``export-data`` and ``generate-report``.
    export: builtin.ExportConfig = builtin.ExportConfig()
    reports: builtin.ReportsConfig = builtin.ReportsConfig()
    #: ``cleanup``: the age at which temporary files go.
    cleanup: builtin.CleanupConfig = builtin.CleanupConfig()

    def store_name(self) -> str:
        """The job store provider the ``store`` setting resolves to."""
        if self.store != "auto":
            return self.store
        return "redis" if self.broker == "redis" else "records"

    def runs_scheduler_in_server(self) -> bool:
        if self.scheduler == "auto":
            return self.broker == "memory"
        return bool(self.scheduler)
