from __future__ import annotations

import pytest

from cache_testkit import Fixture, make_app


@pytest.fixture
def fixture_plugin():
    return Fixture()


@pytest.fixture
async def client(aiohttp_client, tmp_path, fixture_plugin):
    """A client for an app with the cache plugin (memory store) and the fixture plugin."""
    app = make_app(tmp_path, {"services": {"cache": {"provider": "memory"}}}, plugins=[fixture_plugin])
    return await aiohttp_client(app)
