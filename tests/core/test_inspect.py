"""The operators' inspect endpoint: off by default, admin-only when on."""

from __future__ import annotations

from core_testkit import echo_plugin


async def test_off_by_default(make_app, aiohttp_client):
    client = await aiohttp_client(make_app(plugins=[echo_plugin()]))
    assert (await client.get("/_plugboard")).status == 404


async def test_refuses_without_token_configured(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"server": {"inspect": True}}, plugins=[echo_plugin()]))
    resp = await client.get("/_plugboard", headers={"Authorization": "Bearer anything"})
    assert resp.status == 403


async def test_admin_token_required(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"server": {"inspect": True, "admin_token": "t0k"}, "plugins": ["books"]}, plugins=[echo_plugin()]))
    assert (await client.get("/_plugboard")).status == 401
    assert (await client.get("/_plugboard", headers={"Authorization": "Bearer wrong"})).status == 401
    resp = await client.get("/_plugboard", headers={"Authorization": "Bearer t0k"})
    assert resp.status == 200
    body = await resp.json()
    plugins = {p["name"]: p for p in body["plugins"]}
    assert list(plugins) == ["core", "books", "echo"]
    assert plugins["books"]["version"] == "0.1.0"
    assert "plugboard_resolvers" in plugins["books"]["hooks"]
    assert "Query.books" in plugins["books"]["contributes"]["fields"]
    assert "Mutation.createBook" in plugins["books"]["contributes"]["resolvers"]
    assert "Query.hello" in plugins["echo"]["contributes"]["fields"]
    assert "books_books" not in str(body)  # table internals are not exposed
