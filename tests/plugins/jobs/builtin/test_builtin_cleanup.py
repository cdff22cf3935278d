"""cleanup: temporary files (storage tmp/ and <data_dir>/tmp), old job records, stale presence."""

from __future__ import annotations

import os
import time

import pytest
from builtin_testkit import FakeJob

from plugboard.plugins.jobs.keys import JOBS
from plugboard.providers.storage import LocalStorage


class RecordingJobs:
    """Stands in for app[JOBS] in the unit test: remembers the cut-off it was given."""

    def __init__(self) -> None:
        self.cutoffs: list[float] = []

    async def delete_finished_before(self, ts: float) -> int:
        self.cutoffs.append(ts)
        return 3


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


async def test_cleanup_removes_old_temporary_files_and_job_records(make_builtin_app, start_app, tmp_path):
    app, tasks = make_builtin_app(jobs={"cleanup": {"temp_max_age": "1h"}, "retention": 86400})
    jobs = RecordingJobs()
    app[JOBS] = jobs
    await start_app(app)
    storage = LocalStorage(app=app)
    await storage.put("tmp/old.bin", b"x")
    await storage.put("tmp/nested/old.bin", b"x")
    await storage.put("tmp/new.bin", b"x")
    await storage.put("exports/old.csv", b"x")  # not temporary: kept however old
    for key in ("tmp/old.bin", "tmp/nested/old.bin", "exports/old.csv"):
        _age(storage.root / key, 7200)
    temp = tmp_path / "var" / "tmp"
    (temp / "upload-1").mkdir(parents=True)
    (temp / "upload-1" / "part").write_bytes(b"x")
    (temp / "fresh").write_bytes(b"x")
    _age(temp / "upload-1" / "part", 7200)

    job = FakeJob(app)
    result = await tasks["cleanup"](job)
    assert result == {"storage_files": 2, "temp_files": 1, "job_records": 3, "presence": 0}
    assert sorted([f.key async for f in storage.list()]) == ["exports/old.csv", "tmp/new.bin"]
    assert not (storage.root / "tmp" / "nested").exists()
    assert sorted(p.name for p in temp.iterdir()) == ["fresh"]
    assert jobs.cutoffs[0] == pytest.approx(time.time() - 86400, abs=60)
    assert job.reported == [25, 50, 75]


async def test_cleanup_without_anything_to_do(make_builtin_app, start_app):
    app, tasks = make_builtin_app()
    await start_app(app)
    assert await tasks["cleanup"](FakeJob(app)) == {"storage_files": 0, "temp_files": 0, "job_records": 0, "presence": 0}


async def test_cleanup_sweeps_stale_presence(make_builtin_app, start_app):
    app, tasks = make_builtin_app({"plugins": ["realtime"], "realtime": {"presence": {"ttl": "60s"}}})
    await start_app(app)
    from plugboard.plugins.realtime.keys import PRESENCE

    tracker = app[PRESENCE]
    await tracker.store.touch("gone", time.time() - 3600)
    await tracker.heartbeat("here")
    result = await tasks["cleanup"](FakeJob(app))
    assert result["presence"] == 1
    assert [u["id"] for u in await tracker.online_users()] == ["here"]
