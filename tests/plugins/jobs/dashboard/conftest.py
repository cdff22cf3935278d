"""Fixtures for the dashboard tests (see dashboard_testkit)."""

from __future__ import annotations

import pytest
from dashboard_testkit import TOKEN, GatedTasks, make_app


@pytest.fixture
def tasks(aiohttp_client, aiohttp_server):
    # Set up after (so torn down before) the servers: a gated job still
    # waiting when its app shuts down is released first.
    tasks = GatedTasks()
    yield tasks
    tasks.release_all()


@pytest.fixture
def app_factory(tmp_path, tasks):
    def make(*, extra: tuple = (), **kwargs):
        return make_app(tmp_path, plugins=[tasks, *extra], **kwargs)

    return make


@pytest.fixture
async def client(app_factory, aiohttp_client):
    return await aiohttp_client(app_factory())


@pytest.fixture
def admin():
    return {"Authorization": f"Bearer {TOKEN}"}
