"""Shared fixtures for the jobs plugin's tests.

``make_jobs_app(data)`` builds an app with the realtime and jobs plugins and
the test tasks (``pb_jobs_tasks``), records in a SQLite file under tmp_path.
``jobs_app`` is such an app, started (memory broker, records store).
"""

from __future__ import annotations

import pytest
from aiohttp import web

from plugboard.app import create_app
from plugboard.settings import Settings

import pb_jobs_tasks


def jobs_settings(tmp_path, data: dict | None = None) -> dict:
    data = dict(data or {})
    data.setdefault("plugins", ["realtime", "jobs"])
    data.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
    jobs = data.setdefault("jobs", {})
    jobs.setdefault("schedules", [])
    return data


@pytest.fixture
def make_jobs_app(tmp_path):
    def make(data: dict | None = None, plugins=(pb_jobs_tasks,)):
        return create_app(Settings.from_mapping(jobs_settings(tmp_path, data), root=tmp_path), plugins=list(plugins))

    return make


@pytest.fixture
async def start_app():
    """``await start_app(app)``: run its start-up (no HTTP); shut down after the test."""
    runners = []

    async def start(app):
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        return app

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def jobs_app(make_jobs_app, start_app):
    return await start_app(make_jobs_app())
