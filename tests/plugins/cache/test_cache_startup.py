"""Start-up checks: bad @cacheControl hints name the SDL file and line; services and settings mismatches."""

from __future__ import annotations

import pytest

from cache_testkit import make_app
from plugboard import hookimpl
from plugboard.errors import ConfigError, SchemaError


class SDLPlugin:
    def __init__(self, sdl: str) -> None:
        self.sdl = sdl

    @hookimpl
    def plugboard_schema(self):
        return self.sdl


@pytest.mark.parametrize(
    "hint, reason",
    [
        ("@cacheControl(maxAge: -5)", "maxAge must be a whole number of seconds >= 0, not -5"),
        ("@cacheControl(maxAge: 1.5)", "maxAge must be a whole number of seconds >= 0, not 1.5"),
        ('@cacheControl(maxAge: "10")', "maxAge must be a whole number of seconds >= 0, not 10"),
        ("@cacheControl(scope: SHARED)", "scope must be PUBLIC or PRIVATE"),
        ("@cacheControl(maxAge: 5, inheritMaxAge: true)", "inheritMaxAge and maxAge exclude each other"),
    ],
)
def test_bad_hint_in_schema_d_names_file_and_line(tmp_path, hint, reason):
    (tmp_path / "schema.d").mkdir()
    path = tmp_path / "schema.d" / "shop.graphql"
    path.write_text(f"type Shop {{\n  id: ID!\n}}\n\nextend type Query {{\n  shop: Shop {hint}\n}}\n")
    with pytest.raises(SchemaError) as e:
        make_app(tmp_path)
    assert f"{path}:6: @cacheControl on field Query.shop: {reason}" in str(e.value)


def test_bad_type_hint_from_a_plugin_text(tmp_path):
    plugin = SDLPlugin("type Gadget @cacheControl(maxAge: -1) { id: ID! }\nextend type Query { gadget: Gadget }")
    with pytest.raises(SchemaError, match=r"plugin '.*', SDL line 1: @cacheControl on type Gadget: maxAge must be"):
        make_app(tmp_path, plugins=[plugin])


def test_redis_enabled_needs_the_redis_service(tmp_path):
    with pytest.raises(ConfigError) as e:
        make_app(tmp_path, {"cache": {"redis": {"enabled": True}}})
    assert "cache.redis.enabled" in str(e.value) and "services.cache.provider: redis" in str(e.value)
    with pytest.raises(ConfigError, match="cache.redis.enabled"):
        make_app(tmp_path, {"cache": {"redis": {"enabled": True}}, "services": {"cache": {"provider": "memory"}}})


def test_unknown_cache_service_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="no cache service of that name"):
        make_app(tmp_path, {"cache": {"service": "fast"}})
    with pytest.raises(ConfigError, match="cache.queryCache.ttl|cache.query_cache.ttl"):
        make_app(tmp_path, {"cache": {"queryCache": {"ttl": "-1s"}}})
    with pytest.raises(ConfigError, match="cdn_integration|cdnIntegration"):
        make_app(tmp_path, {"cache": {"cdnIntegration": "akamai"}})
    with pytest.raises(ConfigError, match="zone_id and api_token"):
        make_app(tmp_path, {"cache": {"cdnIntegration": "cloudflare"}})
    with pytest.raises(ConfigError, match="services.cache.max_entries"):
        make_app(tmp_path, {"services": {"cache": {"provider": "memory", "max_entries": 0}}})


def test_redis_provider_needs_redis_url(tmp_path):
    import asyncio

    from aiohttp.test_utils import TestServer

    app = make_app(tmp_path, {"services": {"cache": {"provider": "redis"}}})

    async def start():
        server = TestServer(app)
        try:
            await server.start_server()
        finally:
            await server.close()

    with pytest.raises(Exception, match="needs redis.url"):
        asyncio.run(start())


async def test_deployer_hints_on_a_plugins_types_through_schema_d(aiohttp_client, tmp_path):
    from cache_testkit import get

    (tmp_path / "schema.d").mkdir()
    (tmp_path / "schema.d" / "hints.graphql").write_text(
        "extend type Book @cacheControl(maxAge: 120)\nextend type Author @cacheControl(maxAge: 30)\n"
    )
    client = await aiohttp_client(make_app(tmp_path, {"plugins": ["books", "cache"]}))
    resp, _ = await get(client, "{ books(first: 2) { id } }")
    assert resp.headers["Cache-Control"] == "max-age=120, public"
    resp, _ = await get(client, "{ books(first: 2) { id author { name } } }")
    assert resp.headers["Cache-Control"] == "max-age=30, public"
