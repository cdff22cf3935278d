"""``cleanup``: remove what has outlived its use (scheduled daily by default).

- temporary files: storage keys under ``tmp/`` and files under
  ``<server.data_dir>/tmp`` older than ``jobs.cleanup.temp_max_age``;
- finished job records (completed, failed, cancelled) older than ``jobs.retention``;
- stale presence: users whose heartbeat is older than the presence TTL, when
  the real-time plugin runs presence on this app (skipped otherwise).

Result: how many of each were removed,
``{storage_files, temp_files, job_records, presence}``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Callable

from plugboard import keys
from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.plugins.jobs.builtin.services import Services
from plugboard.tasks import TaskContext

#: The storage prefix of temporary files.
TMP_PREFIX = "tmp/"


def remove_old_files(folder: Path, before: float) -> int:
    """Delete files under ``folder`` last modified before ``before``; then its empty sub-folders."""
    if not folder.is_dir():
        return 0
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if path.lstat().st_mtime < before:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if Path(dirpath) != folder:
            try:
                Path(dirpath).rmdir()
            except OSError:
                pass  # not empty
    return removed


async def remove_old_storage_files(storage: Any, before: float) -> int:
    removed = 0
    async for stored in storage.list(TMP_PREFIX):
        if stored.modified < before and await storage.delete(stored.key):
            removed += 1
    return removed


async def sweep_presence(app: Any) -> int:
    try:
        from plugboard.plugins.realtime.keys import PRESENCE
    except ImportError:
        return 0
    tracker = app.get(PRESENCE)
    if tracker is None:
        return 0
    return len(await tracker.sweep())


def make_task(settings: BuiltinConfig, services: Services) -> Callable[..., Any]:
    async def cleanup(job: TaskContext) -> dict[str, int]:
        app = job.app
        now = time.time()
        temp_before = now - settings.cleanup.temp_max_age
        storage = await services.storage(app)
        storage_files = await remove_old_storage_files(storage, temp_before)
        await job.progress(25)
        data_dir = app[keys.SETTINGS].root / app[keys.CORE_CONFIG].server.data_dir
        temp_files = await asyncio.to_thread(remove_old_files, data_dir / "tmp", temp_before)
        await job.progress(50)
        from plugboard.plugins.jobs.keys import JOBS

        jobs = app.get(JOBS)
        job_records = await jobs.delete_finished_before(now - settings.retention) if jobs is not None else 0
        await job.progress(75)
        presence = await sweep_presence(app)
        return {"storage_files": storage_files, "temp_files": temp_files, "job_records": job_records, "presence": presence}

    return cleanup
