"""Automatic persisted queries kept in the cache service: the protocol as Apollo Client speaks it.

A hash the server does not know is answered PERSISTED_QUERY_NOT_FOUND, the
client sends the document with it, and from then on the hash alone runs it,
on POST, GET (cached like any GET), WebSocket and SSE; a hash that does not
match, a broken document, a bad version or hash are refused and saved
nowhere; two instances on one Redis share documents; a Redis outage asks
clients for the document instead of failing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import aiohttp
import pytest
from cache_testkit import make_app

from plugboard.plugins.realtime.sse import TOKEN_HEADER
from plugboard.testing import RedisServer, free_port

ITEMS = "{ items { id name } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"
NO_STORE = "private, no-cache, must-revalidate"


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def hashed(document: str, **persisted) -> dict:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256(document), **persisted}}


async def send(client, body: dict, accept: str = GRAPHQL_RESPONSE):
    resp = await client.post("/graphql", json=body, headers={"Accept": accept})
    return resp, await resp.json(content_type=None)


def error_code(body: dict) -> str:
    [error] = body["errors"]
    return error["extensions"]["code"]


async def test_a_document_is_sent_once_then_by_its_hash(client, fixture_plugin):
    resp, body = await send(client, {"extensions": hashed(ITEMS)})
    assert resp.status == 200 and "data" not in body and error_code(body) == "PERSISTED_QUERY_NOT_FOUND", body
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"  # what older Apollo Clients match on
    assert resp.headers["Cache-Control"] == NO_STORE
    resp, body = await send(client, {"query": ITEMS, "extensions": hashed(ITEMS)})
    assert resp.status == 200 and body["data"]["items"][0] == {"id": "1", "name": "item 1"}, body
    resp, body = await send(client, {"extensions": hashed(ITEMS)})
    assert resp.status == 200 and body["data"]["items"][0] == {"id": "1", "name": "item 1"}, body
    # The hash runs the same document: the response cache's entry answers it.
    assert resp.headers["X-Cache"] == "HIT" and fixture_plugin.calls["items"] == 1


async def test_variables_and_operation_name_go_with_the_hash(client):
    document = "query One($id: ID!) { item(id: $id) { name } } query Two { items { id } }"
    await send(client, {"query": document, "operationName": "One", "variables": {"id": "2"}, "extensions": hashed(document)})
    resp, body = await send(client, {"operationName": "One", "variables": {"id": "3"}, "extensions": hashed(document)})
    assert body == {"data": {"item": {"name": "item 3"}}}, body
    resp, body = await send(client, {"operationName": "Two", "extensions": hashed(document)})
    assert body["data"]["items"][2] == {"id": "3"}, body


async def test_a_hash_alone_fits_a_get_that_caches_like_any_get(client, fixture_plugin):
    await send(client, {"query": ITEMS, "extensions": hashed(ITEMS)})
    params = {"extensions": json.dumps(hashed(ITEMS))}
    headers = {"apollo-require-preflight": "1"}
    resp = await client.get("/graphql", params=params, headers=headers)
    body = await resp.json(content_type=None)
    assert resp.status == 200 and body["data"]["items"][0]["id"] == "1", body
    assert resp.headers["Cache-Control"] == "max-age=30, public" and resp.headers["ETag"]
    assert "Item:1" in resp.headers["Cache-Tag"].split(",")
    resp = await client.get("/graphql", params=params, headers={**headers, "If-None-Match": resp.headers["ETag"]})
    assert resp.status == 304
    assert fixture_plugin.calls["items"] == 1
    # Unknown over GET too, and never kept by a cache in between.
    other = {"extensions": json.dumps(hashed("{ items { id } }"))}
    resp = await client.get("/graphql", params=other, headers=headers)
    assert resp.status == 200 and error_code(await resp.json()) == "PERSISTED_QUERY_NOT_FOUND"
    assert resp.headers["Cache-Control"] == NO_STORE


async def test_a_mutation_by_hash_is_refused_over_get(client):
    mutation = 'mutation { renameItem(id: "1", name: "x") { id } }'
    resp, body = await send(client, {"query": mutation, "extensions": hashed(mutation)}, accept="application/json")
    assert body["data"]["renameItem"] == {"id": "1"}, body
    resp = await client.get("/graphql", params={"extensions": json.dumps(hashed(mutation))}, headers={"apollo-require-preflight": "1"})
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        ({"persistedQuery": "abc"}, "must be an object"),
        ({"persistedQuery": {"version": 2, "sha256Hash": sha256(ITEMS)}}, "Unsupported persisted query version"),
        ({"persistedQuery": {"sha256Hash": sha256(ITEMS)}}, "Unsupported persisted query version"),
        ({"persistedQuery": {"version": 1, "sha256Hash": "../../etc"}}, "64 hexadecimal digits"),
        ({"persistedQuery": {"version": 1, "sha256Hash": sha256(ITEMS) + "0"}}, "64 hexadecimal digits"),
        ({"persistedQuery": {"version": 1, "sha256Hash": 42}}, "64 hexadecimal digits"),
        ({"persistedQuery": {"version": 1}}, "64 hexadecimal digits"),
    ],
)
async def test_a_malformed_request_is_a_400(client, extensions, message):
    for body in ({"extensions": extensions}, {"query": ITEMS, "extensions": extensions}):
        resp, answer = await send(client, body)
        assert resp.status == 400 and error_code(answer) == "BAD_REQUEST" and message in answer["errors"][0]["message"], answer


async def test_a_hash_that_does_not_match_saves_nothing(client):
    # Saving ``{ items }`` under the hash of another document would answer
    # every client of that document with the wrong data.
    other = "{ items { id } }"
    resp, body = await send(client, {"query": ITEMS, "extensions": hashed(other)})
    assert resp.status == 400 and error_code(body) == "BAD_REQUEST" and body["errors"][0]["message"] == "provided sha does not match query"
    _, body = await send(client, {"extensions": hashed(other)})
    assert error_code(body) == "PERSISTED_QUERY_NOT_FOUND"
    # The hash is of the text as sent: upper-case hex names the same document.
    upper = {"persistedQuery": {"version": 1, "sha256Hash": sha256(ITEMS).upper()}}
    await send(client, {"query": ITEMS, "extensions": upper})
    _, body = await send(client, {"extensions": hashed(ITEMS)})
    assert body["data"]["items"], body


async def test_a_document_that_does_not_validate_is_not_saved(client):
    broken = "{ items { nope } }"
    resp, body = await send(client, {"query": broken, "extensions": hashed(broken)})
    assert resp.status == 400 and error_code(body) == "GRAPHQL_VALIDATION_FAILED", body
    _, body = await send(client, {"extensions": hashed(broken)})
    assert error_code(body) == "PERSISTED_QUERY_NOT_FOUND"


async def test_turned_off_every_persisted_request_is_not_supported(aiohttp_client, tmp_path, fixture_plugin):
    settings = {"services": {"cache": {"provider": "memory"}}, "cache": {"persistedQueries": {"enabled": False}}}
    client = await aiohttp_client(make_app(tmp_path, settings, plugins=[fixture_plugin]))
    for body in ({"extensions": hashed(ITEMS)}, {"query": ITEMS, "extensions": hashed(ITEMS)}):
        resp, answer = await send(client, body)
        assert resp.status == 200 and error_code(answer) == "PERSISTED_QUERY_NOT_SUPPORTED", answer
        assert answer["errors"][0]["message"] == "PersistedQueryNotSupported" and resp.headers["Cache-Control"] == NO_STORE
    resp, answer = await send(client, {"query": ITEMS})  # without the extension, as before
    assert answer["data"]["items"], answer


async def test_over_websocket_and_sse(aiohttp_client, tmp_path, fixture_plugin):
    client = await aiohttp_client(make_app(tmp_path, {"plugins": ["realtime", "cache"]}, plugins=[fixture_plugin]))
    async with client.ws_connect("/graphql", protocols=("graphql-transport-ws",)) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"extensions": hashed(ITEMS)}})
        message = await ws.receive_json(timeout=5)
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND", message
        await ws.send_json({"id": "2", "type": "subscribe", "payload": {"query": ITEMS, "extensions": hashed(ITEMS)}})
        assert (await ws.receive_json(timeout=5))["payload"]["data"]["items"]
        assert (await ws.receive_json(timeout=5))["type"] == "complete"
        await ws.send_json({"id": "3", "type": "subscribe", "payload": {"extensions": hashed(ITEMS)}})
        message = await ws.receive_json(timeout=5)
        assert message["type"] == "next" and message["payload"]["data"]["items"][0]["id"] == "1", message
        assert (await ws.receive_json(timeout=5))["type"] == "complete"
        # A payload with neither a query nor the extension still breaks the protocol.
        await ws.send_json({"id": "4", "type": "subscribe", "payload": {"extensions": {}}})
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4400, closed
    resp = await client.post("/graphql", json={"extensions": hashed(ITEMS)}, headers={"Accept": "text/event-stream"})
    text = await resp.text()
    assert resp.status == 200 and '"items":[{"id":"1"' in text, text
    # graphql-sse reports an unknown hash as the stream's result, as it does a document that does not validate.
    resp = await client.post("/graphql", json={"extensions": hashed("{ items { id } }")}, headers={"Accept": "text/event-stream"})
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/event-stream" and "PERSISTED_QUERY_NOT_FOUND" in text, text
    resp = await client.post("/graphql", json={"extensions": {"persistedQuery": {"version": 3}}}, headers={"Accept": "text/event-stream"})
    assert resp.status == 400 and "Unsupported persisted query version" in await resp.text()
    # Single connection mode answers a document it cannot run 400, as one that does not validate.
    token = await (await client.put("/graphql")).text()
    unknown = {**hashed("{ items { name } }"), "operationId": "a"}
    resp = await client.post("/graphql", json={"extensions": unknown}, headers={TOKEN_HEADER: token})
    assert resp.status == 400 and error_code(await resp.json()) == "PERSISTED_QUERY_NOT_FOUND"
    resp = await client.post("/graphql", json={"extensions": {**hashed(ITEMS), "operationId": "b"}}, headers={TOKEN_HEADER: token})
    assert resp.status == 202, await resp.text()


async def test_two_instances_on_one_redis_share_documents(plugboard_serve, redis_url):
    settings = {
        "plugins": ["books", "cache"],
        "redis": {"url": redis_url},
        "services": {"cache": {"provider": "redis"}},
        "cache": {"redis": {"enabled": True}},
    }
    a, b = plugboard_serve(settings), plugboard_serve(settings)
    document = "{ books(first: 3) { id title } }"
    async with aiohttp.ClientSession() as session:

        async def ask(instance, body):
            async with session.post(instance.url + "/graphql", json=body) as resp:
                return await resp.json(content_type=None)

        assert error_code(await ask(b, {"extensions": hashed(document)})) == "PERSISTED_QUERY_NOT_FOUND"
        assert "data" in await ask(a, {"query": document, "extensions": hashed(document)})
        assert await ask(b, {"extensions": hashed(document)}) == {"data": {"books": []}}


async def test_redis_down_asks_for_the_document_and_runs_it(aiohttp_client, tmp_path, fixture_plugin):
    server = RedisServer(port=free_port()).start()
    try:
        settings = {
            "redis": {"url": server.url},
            "services": {"cache": {"provider": "redis", "retry_after": "0.3s"}},
            "cache": {"redis": {"enabled": True}},
        }
        client = await aiohttp_client(make_app(tmp_path, settings, plugins=[fixture_plugin]))
        await send(client, {"query": ITEMS, "extensions": hashed(ITEMS)})
        server.stop()
        started = time.monotonic()
        resp, body = await send(client, {"extensions": hashed(ITEMS)})
        assert resp.status == 200 and error_code(body) == "PERSISTED_QUERY_NOT_FOUND", body
        resp, body = await send(client, {"query": ITEMS, "extensions": hashed(ITEMS)})
        assert resp.status == 200 and body["data"]["items"], body
        assert time.monotonic() - started < 2.0
        server.start()  # empty again: the client is asked once more, then it works
        await asyncio.sleep(0.35)
        _, body = await send(client, {"extensions": hashed(ITEMS)})
        assert error_code(body) == "PERSISTED_QUERY_NOT_FOUND"
        await send(client, {"query": ITEMS, "extensions": hashed(ITEMS)})
        _, body = await send(client, {"extensions": hashed(ITEMS)})
        assert body["data"]["items"], body
    finally:
        server.stop()
