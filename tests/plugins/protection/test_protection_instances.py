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
    # The figure: max 100, requests spread over both, the 101st refused on either.
    a = plugboard_serve(_settings(redis_url, requests={"max": 100, "window_ms": 60000}))
    b = plugboard_serve(_settings(redis_url, requests={"max": 100, "window_ms": 60000}))
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(102):
            async with http.post((a if i % 2 else b).url + "/graphql", json=BOOKS) as resp:
                statuses.append(resp.status)
                if i == 99:
                    assert resp.headers["RateLimit"].startswith('"ip";r=0;')
        # The 101st went to b, the 102nd to a: both refuse.
        assert statuses[:100] == [200] * 100 and statuses[100:] == [429, 429]
        # So does a WebSocket upgrade on either: accepted, then closed 4429.
        for server in (a, b):
            async with http.ws_connect(server.url + "/graphql", protocols=("graphql-transport-ws",)) as ws:
                message = await ws.receive(timeout=5)
                assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4429


async def test_two_servers_share_a_users_policy(plugboard_serve, redis_url):
    import time

    import jwt

    secret = "s3cret-s3cret-s3cret-s3cret-s3cret!"
    settings = _settings(redis_url, requests={"max": 1000, "window_ms": 60000, "per_user": {"max": 5}}, jwt={"enabled": True, "secret": secret})
    a = plugboard_serve(settings)
    b = plugboard_serve(settings)
    now = int(time.time())
    auth = {"Authorization": "Bearer " + jwt.encode({"sub": "erin", "exp": now + 300}, secret, algorithm="HS256")}
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(6):
            async with http.post((a if i % 2 else b).url + "/graphql", json=BOOKS, headers=auth) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    assert resp.headers["RateLimit-Policy"] == '"user";q=5;w=60'
    assert statuses == [200] * 5 + [429]


async def _dead_store(app):
    """A redis store on a port nobody listens on, in place of the app's store."""
    import attrs

    from plugboard import keys
    from plugboard.plugins.protection.limiter import LIMITER
    from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig, RedisRateLimitStore

    core = app[keys.CORE_CONFIG]
    dead = RedisRateLimitStore(RedisRateLimitConfig(timeout=0.2), {keys.CORE_CONFIG: attrs.evolve(core, redis=attrs.evolve(core.redis, url="redis://127.0.0.1:1/0"))})
    await dead.start()
    app[LIMITER].use_store(dead)
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


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_redis_down_with_credentials_and_field_limits(plugboard_client, caplog, fail_closed, tmp_path):
    # The identified path (counted in the operation step) and @rateLimit fail the same way.
    import time

    import jwt

    from plugboard import hookimpl

    secret = "s3cret-s3cret-s3cret-s3cret-s3cret!"

    class Limited:
        @hookimpl
        def plugboard_schema(self):
            return 'extend type Query { ping: String @rateLimit(max: 5, window: "1m") }'

        @hookimpl
        def plugboard_resolvers(self):
            async def ping(parent, args, ctx, info):
                return "pong"

            return {"Query.ping": ping}

    client = await plugboard_client(
        {"plugins": ["protection"], "protection": {"fail_closed": fail_closed, "jwt": {"enabled": True, "secret": secret}}}, plugins=[Limited()]
    )
    dead = await _dead_store(client.app)
    auth = {"Authorization": "Bearer " + jwt.encode({"sub": "frank", "exp": int(time.time()) + 300}, secret, algorithm="HS256")}
    try:
        with caplog.at_level(logging.WARNING, logger="plugboard.protection"):
            for headers in (auth, {}):
                async with client.post("/graphql", json={"query": "{ ping }"}, headers=headers) as resp:
                    if fail_closed:
                        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                    else:
                        assert resp.status == 200 and (await resp.json())["data"] == {"ping": "pong"}
        assert "the ratelimit store failed" in caplog.text
    finally:
        await dead.close()
