"""Shared fixtures for the jobs plugin's tests.

``make_jobs_app(data)`` builds an app with the realtime and jobs plugins and
the test tasks (``pb_jobs_tasks``), records in a SQLite file under tmp_path.
``jobs_app`` is such an app, started (memory broker, records store).
"""

from __future__ import annotations

import pytest
from aiohttp import web

import pb_jobs_tasks


def jobs_settings(data: dict | None = None) -> dict:
    data = {"plugins": ["realtime", "jobs"], **(data or {})}
    data["jobs"] = {"schedules": [], **(data.get("jobs") or {})}
    return data


@pytest.fixture
def make_jobs_app(plugboard_app):
    def make(data: dict | None = None, plugins=(pb_jobs_tasks,)):
        return plugboard_app(jobs_settings(data), plugins=plugins)

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
