"""Test tasks for the jobs plugin (a plugin module, so subprocess servers and
workers load it by name with this folder on PYTHONPATH).

``pb_jobs_tasks`` contributes the tasks below; ``Bearer <user>`` makes
``context.identity`` the user, and the user ``root`` has the admin role.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from plugboard import hookimpl
from plugboard.plugins.jobs.errors import JobCancelled
from plugboard.tasks import PermanentError, TaskContext, retry


async def add(a: int, b: int = 1) -> int:
    return a + b


async def noop() -> None:
    return None


async def sleep(job: TaskContext, seconds: float, steps: int = 1) -> dict:
    """Sleeps in ``steps`` parts, reporting progress after each."""
    for i in range(steps):
        await asyncio.sleep(seconds / steps)
        await job.progress((i + 1) * 100 / steps)
    return {"slept": seconds, "pid": os.getpid()}


@retry(attempts=3, backoff=0.05, max_backoff=0.1)
async def flaky(job: TaskContext, succeed_on: int = 3) -> dict:
    if job.attempt < succeed_on:
        raise ValueError(f"attempt {job.attempt} failed")
    return {"attempt": job.attempt}


@retry(attempts=2, backoff=0.01)
async def always_fails(job: TaskContext) -> None:
    raise RuntimeError(f"boom {job.attempt}")


@retry(attempts=5, backoff=0.01, permanent=(KeyError,))
async def permanent(kind: str = "permanent") -> None:
    if kind == "key":
        raise KeyError("missing")
    raise PermanentError("cannot be done")


async def bad_result() -> Any:
    return object()


async def until_cancelled(job: TaskContext) -> None:
    """Reports progress every 20 ms until cancelled (then JobCancelled ends it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await job.progress(10)
        await asyncio.sleep(0.02)


async def record_pid(path: str, seconds: float = 0.0) -> int:
    """Appends this process's pid to ``path`` (which worker ran it), then sleeps."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    await asyncio.sleep(seconds)
    return os.getpid()


TASKS = {
    "add": add,
    "noop": noop,
    "sleep": sleep,
    "flaky": flaky,
    "always-fails": always_fails,
    "permanent": permanent,
    "bad-result": bad_result,
    "until-cancelled": until_cancelled,
    "record-pid": record_pid,
}


@hookimpl
def plugboard_tasks(app: Any, config: Any) -> dict:
    return dict(TASKS)


@hookimpl
def plugboard_context(context: Any, request: Any, connection_params: Any) -> dict | None:
    token = None
    if connection_params and isinstance(connection_params.get("authToken"), str):
        token = connection_params["authToken"]
    elif request is not None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:]
    if not token:
        return None
    return {"identity": token, "roles": ["admin"] if token == "root" else []}


__all__ = ["JobCancelled", "TASKS"]
