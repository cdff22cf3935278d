"""Tasks for the jobs reliability and cross-instance tests, beside
``pb_jobs_tasks`` (a plugin module, so subprocess servers and workers load it
by name with this folder on PYTHONPATH).

Each task appends ``"<job id> <pid> <attempt>"`` to the file named by its
``log`` argument, so a test sees every execution: which process ran which
job, and how often.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from plugboard import hookimpl
from plugboard.tasks import TaskContext


def _record(log: str, job: TaskContext) -> None:
    with open(log, "a") as f:
        f.write(f"{job.id} {os.getpid()} {job.attempt}\n")


async def logged(job: TaskContext, log: str) -> int:
    """Log the run; the worker's pid."""
    _record(log, job)
    return os.getpid()


async def _released(path: str) -> None:
    while path and not os.path.exists(path):
        await asyncio.sleep(0.02)


async def hold(job: TaskContext, log: str, started: str, release: str) -> int:
    """Log the run, touch the file ``started``, wait until the file ``release`` exists; the pid."""
    _record(log, job)
    Path(started).touch()
    await _released(release)
    return os.getpid()


async def stepped(job: TaskContext, log: str, steps: list, release: str = "", pause: float = 0.05) -> int:
    """Log the run, wait for the file ``release`` (if named), then report each
    value of ``steps`` as progress, ``pause`` seconds apart; the pid."""
    _record(log, job)
    await _released(release)
    for value in steps:
        await asyncio.sleep(pause)
        await job.progress(value)
    return os.getpid()


async def broken(job: TaskContext, log: str) -> None:
    """Log the run and fail; no ``@retry``, so ``jobs.retries`` applies."""
    _record(log, job)
    raise ValueError(f"broken on attempt {job.attempt}")


async def fatal(job: TaskContext, log: str) -> None:
    """Log the run and SIGKILL this process (a job that takes its worker down)."""
    _record(log, job)
    os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def plugboard_tasks() -> dict[str, Any]:
    return {"logged": logged, "hold": hold, "stepped": stepped, "broken": broken, "fatal": fatal}


def runs(log: str) -> list[tuple[str, int, int]]:
    """The log written by these tasks: (job id, pid, attempt) per run, in order."""
    if not os.path.exists(log):
        return []
    out = []
    for line in Path(log).read_text().splitlines():
        job_id, pid, attempt = line.split()
        out.append((job_id, int(pid), int(attempt)))
    return out
