"""``plugboard worker`` and ``plugboard scheduler`` (added through ``plugboard_commands``).

Both build the app exactly as ``plugboard serve`` does (every plugin, its
providers and tasks), start it without an HTTP server, print one ready line
(tests and supervisors wait for it) and stop cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from plugboard import keys
from plugboard.commands import Command, CommandContext
from plugboard.cancelling import cancel_until_done
from plugboard.plugins.jobs.config import JobsConfig
from plugboard.plugins.jobs.keys import JOBS, ROLE

EXIT_USAGE = 2


def _jobs_config(app: Any) -> JobsConfig:
    for config in app[keys.PLUGIN_CONFIGS].values():
        if isinstance(config, JobsConfig):
            return config
    raise LookupError("the jobs plugin is not enabled")


def _stop_on_signals(event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- plugboard worker ---------------------------------------------------------


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: jobs.concurrency)")


def run_worker(ctx: CommandContext) -> int:
    app = ctx.build_app()
    config = _jobs_config(app)
    if config.broker == "memory":
        print(
            "plugboard worker: jobs.broker is 'memory', so jobs run inside plugboard serve and there is "
            "nothing to consume; set jobs.broker: redis (and redis.url) to run workers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    concurrency = ctx.args.concurrency or config.concurrency
    if concurrency < 1:
        print("plugboard worker: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    app[ROLE] = "worker"
    _use_uvloop()
    return asyncio.run(_work(ctx, app, config, concurrency))


async def _work(ctx: CommandContext, app: Any, config: JobsConfig, concurrency: int) -> int:
    from taskiq.receiver import Receiver

    finish = asyncio.Event()
    _stop_on_signals(finish)
    async with ctx.running(app):
        jobs = app[JOBS]
        broker = jobs.broker
        broker.concurrency = concurrency
        broker.is_worker_process = True
        receiver = Receiver(
            broker,
            max_async_tasks=concurrency,
            wait_tasks_timeout=config.shutdown_grace,
            run_startup=False,
            validate_params=False,
        )
        print(f"plugboard worker: consuming {config.queue} (concurrency {concurrency}, pid {os.getpid()})", flush=True)
        await receiver.listen(finish)
        # Jobs that outlived the grace period: cancelled unsettled, so their
        # messages stay pending and another worker runs them.
        await cancel_until_done(set(jobs.runner.active), every=0.5)
    return 0


# -- plugboard scheduler --------------------------------------------------------


def _scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    # For tests: a tick every N seconds instead of every minute.
    parser.add_argument("--tick-seconds", type=float, default=60.0, help=argparse.SUPPRESS)


def run_scheduler(ctx: CommandContext) -> int:
    app = ctx.build_app()
    _jobs_config(app)
    app[ROLE] = "scheduler"
    return asyncio.run(_schedule(ctx, app, ctx.args.tick_seconds))


async def _schedule(ctx: CommandContext, app: Any, period: float) -> int:
    from plugboard.plugins.jobs.runtime import make_scheduler
    from plugboard.plugins.jobs.scheduler import clock_ticks

    finish = asyncio.Event()
    _stop_on_signals(finish)
    async with ctx.running(app):
        scheduler = make_scheduler(app, _jobs_config(app), app[JOBS])
        print(f"plugboard scheduler: {len(scheduler.schedules)} schedules (pid {os.getpid()})", flush=True)
        loop = asyncio.create_task(scheduler.run(clock_ticks(period)))
        await finish.wait()
        await cancel_until_done([loop])
    return 0


COMMANDS = [
    Command("worker", "consume the jobs queue (jobs.broker: redis)", run_worker, _worker_arguments),
    Command("scheduler", "fire the cron schedules (jobs.schedules and plugins')", run_scheduler, _scheduler_arguments),
]
