"""Across instances and outages: two `plugboard serve` processes on one Redis share the limit; Redis down fails open or closed; @cost errors name the SDL."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from plugboard.errors import SchemaError

BOOKS = {"query": "{ books(first: 1) { title } }"}


def _settings(redis_url: str, **protection):
    return {
        "plugins": ["books", "protection"],
        "redis": {"url": redis_url},
        "services": {"ratelimit": {"provider": "redis"}},
        "protection": {"requests": {"max": 10, "window_ms": 60000}, **protection},
    }


async def test_two_servers_share_the_limit(plugboard_serve, redis_url):
    a = plugboard_serve(_settings(redis_url))
    b = plugboard_serve(_settings(redis_url))
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(14):
            async with http.post((a if i % 2 else b).url + "/graphql", json=BOOKS) as resp:
                statuses.append(resp.status)
    assert statuses[:10] == [200] * 10
    assert statuses[10:] == [429] * 4


async def _dead_store(app):
    """A redis store on a port nobody listens on, in place of the app's store."""
    import attrs

    from plugboard import keys
    from plugboard.plugins.protection.limiter import LIMITER
    from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig, RedisRateLimitStore

    core = app[keys.CORE_CONFIG]
    dead = RedisRateLimitStore(RedisRateLimitConfig(timeout=0.2), {keys.CORE_CONFIG: attrs.evolve(core, redis=attrs.evolve(core.redis, url="redis://127.0.0.1:1/0"))})
    await dead.start()
    app[LIMITER]._store = dead
    return dead


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_redis_down_fails_open_with_a_warning_or_closed_with_503(plugboard_client, caplog, fail_closed):
    client = await plugboard_client({"plugins": ["books", "protection"], "protection": {"fail_closed": fail_closed}})
    dead = await _dead_store(client.app)
    try:
        with caplog.at_level(logging.WARNING, logger="plugboard.protection"):
            async with client.post("/graphql", json=BOOKS) as resp:
                assert resp.status == (503 if fail_closed else 200)
                if fail_closed:
                    assert resp.headers["Retry-After"] == "1"
        assert "the ratelimit store failed" in caplog.text
    finally:
        await dead.close()


def test_negative_cost_weight_fails_start_up_naming_the_sdl(plugboard_app, tmp_path):

    from plugboard import hookimpl

    sdl = tmp_path / "pricey.graphql"
    sdl.write_text("extend type Query {\n  pricey: Int @cost(weight: -3)\n}\n")

    class Pricey:
        @hookimpl
        def plugboard_schema(self):
            return sdl

        @hookimpl
        def plugboard_resolvers(self):
            async def pricey(parent, args, ctx, info):
                return 1

            return {"Query.pricey": pricey}

    with pytest.raises(SchemaError, match=r"pricey.graphql:2: @cost on field Query.pricey: weight must be a whole number >= 0, not -3"):
        plugboard_app({"plugins": ["protection"]}, plugins=[Pricey()])
