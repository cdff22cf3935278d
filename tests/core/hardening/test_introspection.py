"""Finding 4: ``graphql.introspection: false`` is enforced on every transport.

``__schema`` and ``__type`` are refused (INTROSPECTION_DISABLED, 400) for
everyone but admins (``server.admin_token`` as bearer, or the ``admin``
role); ``__typename`` stays allowed.
"""

from __future__ import annotations

import json

import pytest

from hardening_kit import GRAPHQL_RESPONSE, INTROSPECTION_QUERY, bearer_auth_plugin, error_code, post

TOKEN = "op-s3cret"
SCHEMA = "{ __schema { queryType { name } } }"
TYPE = '{ __type(name: "Book") { name } }'
HIDDEN = "{ books { id } ...Q } fragment Q on Query { a: __schema { types { name } } }"


@pytest.fixture
def settings():
    return {
        "plugins": ["books", "realtime"],
        "graphql": {"introspection": False},
        "server": {"admin_token": TOKEN},
        "realtime": {"channels": {"enabled": False}, "features": {"presence": False, "chat": False, "notifications": False}},
    }


@pytest.fixture
async def client(make_app, aiohttp_client, settings):
    return await aiohttp_client(make_app(settings, plugins=[bearer_auth_plugin()]))


@pytest.mark.parametrize("query", [SCHEMA, TYPE, HIDDEN, INTROSPECTION_QUERY])
async def test_post_refuses_introspection(client, query):
    status, body = await post(client, query)
    assert (status, error_code(body)) == (400, "INTROSPECTION_DISABLED"), body
    assert "graphql.introspection" in body["errors"][0]["message"]


async def test_get_refuses_introspection(client):
    resp = await client.get("/graphql", params={"query": SCHEMA}, headers={"Accept": GRAPHQL_RESPONSE, "graphql-require-preflight": "1"})
    assert (resp.status, error_code(await resp.json())) == (400, "INTROSPECTION_DISABLED")


async def test_typename_and_ordinary_queries_pass(client):
    status, body = await post(client, "{ __typename books { __typename id } }")
    assert status == 200 and body["data"]["__typename"] == "Query", body


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", "Bearer root"], ids=["admin-token", "admin-role"])
async def test_admins_may_introspect(client, authorization):
    resp = await client.post("/graphql", json={"query": INTROSPECTION_QUERY}, headers={"Accept": GRAPHQL_RESPONSE, "Authorization": authorization})
    body = await resp.json()
    assert resp.status == 200 and body["data"]["__schema"]["queryType"]["name"] == "Query", body


async def test_a_user_who_is_not_admin_may_not(client):
    resp = await client.post("/graphql", json={"query": TYPE}, headers={"Accept": GRAPHQL_RESPONSE, "Authorization": "Bearer alice"})
    assert (resp.status, error_code(await resp.json())) == (400, "INTROSPECTION_DISABLED")


async def test_sse_refuses_introspection(client):
    resp = await client.post("/graphql", data=json.dumps({"query": SCHEMA}), headers={"Accept": "text/event-stream", "Content-Type": "application/json"})
    text = await resp.text()
    assert "INTROSPECTION_DISABLED" in text and "queryType" not in text, (resp.status, text)


async def ws_result(client, query, init=None):
    async with client.ws_connect("/graphql", protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init", "payload": init or {}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        return await ws.receive_json(timeout=5)


async def test_websocket_refuses_introspection(client):
    message = await ws_result(client, SCHEMA)
    assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED", message


async def test_websocket_admin_may_introspect(client):
    message = await ws_result(client, SCHEMA, {"authorization": f"Bearer {TOKEN}"})
    assert message["type"] == "next" and message["payload"]["data"]["__schema"]["queryType"]["name"] == "Query", message


async def test_introspection_on_by_default(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"plugins": ["books"]}))
    status, body = await post(client, SCHEMA)
    assert status == 200 and body["data"]["__schema"]["queryType"]["name"] == "Query"
