"""Jobs: background jobs on taskiq brokers, workers, cron schedules, retries, job records.

The hook implementations are thin; the work lives in small modules:
``config`` (settings), ``store`` (job records: records or redis),
``brokers`` (memory or redis), ``runner`` (one attempt of a job),
``api`` (``app[JOBS]``), ``schema.graphql`` (SDL), ``graphql`` (resolvers), ``scheduler``
(cron), ``commands`` (``plugboard worker`` / ``plugboard scheduler``) and
``runtime`` (start-up). Built-in job types come from ``builtin``, the
dashboard from ``dashboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl
from plugboard.plugins.jobs.config import JobsConfig


@hookimpl
def plugboard_metrics(app: Any, registry: Any) -> Any:
    from plugboard.plugins.jobs.prometheus import register

    return register(app, registry)


@hookimpl
def plugboard_config_class() -> type:
    return JobsConfig


@hookimpl
def plugboard_providers() -> list:
    from plugboard.plugins.jobs.brokers import PROVIDER_SPECS as BROKERS
    from plugboard.plugins.jobs.store import PROVIDER_SPECS as STORES

    return [*BROKERS, *STORES]


@hookimpl
def plugboard_configure(app: Any, config: JobsConfig) -> None:
    from plugboard.plugins.jobs.runtime import check_config

    check_config(app, config)


@hookimpl
def plugboard_commands() -> list:
    from plugboard.plugins.jobs.commands import COMMANDS

    return list(COMMANDS)


@hookimpl
def plugboard_schema(config: JobsConfig) -> Path:
    return Path(__file__).with_name("schema.graphql")


@hookimpl
def plugboard_resolvers(config: JobsConfig) -> dict[str, Any]:
    from plugboard.plugins.jobs.graphql import RESOLVERS

    return dict(RESOLVERS)


@hookimpl
def plugboard_subscriptions(config: JobsConfig) -> dict[str, Any]:
    from plugboard.plugins.jobs.graphql import SUBSCRIPTIONS

    return dict(SUBSCRIPTIONS)


@hookimpl
def plugboard_tables(metadata: Any, config: JobsConfig) -> None:
    if config.store_name() == "records":
        from plugboard.plugins.jobs.store.records import define_table

        define_table(metadata)


@hookimpl
def plugboard_tasks(app: Any, config: JobsConfig) -> dict[str, Any]:
    from plugboard.plugins.jobs.builtin import builtin_tasks

    return dict(builtin_tasks(config))


@hookimpl
def plugboard_routes(app: Any, config: JobsConfig) -> list[Any]:
    if not config.dashboard:
        return []
    from plugboard.plugins.jobs.dashboard import dashboard_routes

    return list(dashboard_routes(config))


@hookimpl
async def plugboard_lifespan(app: Any, config: JobsConfig):
    from plugboard.plugins.jobs.runtime import lifespan

    async for _ in lifespan(app, config):
        yield
