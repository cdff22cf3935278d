"""The graphql-sse transport on a real server on loopback: both modes, every error status, backpressure and cleanup.

The SSE stream is parsed here from the raw response body, so these tests
check the bytes on the wire, not a client library's reading of them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import types
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from plugboard import hookimpl, keys
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime import sse
from plugboard.plugins.realtime.limiter import CONNECTION_LIMITER
from plugboard.plugins.realtime.sse import SEND_TIMEOUT, SSE_STATE, TOKEN_HEADER, SSETransport
from plugboard.testing import EventStream, eventually

SSE = "text/event-stream"
JSON = "application/json"

SDL = """
extend type Query { greeting: String  whoami: String }
extend type Mutation { bump(by: Int!): Int! }
extend type Subscription {
  countdown(from: Int!): Int
  boom: Int
  flood(size: Int!): String
  forever(tag: String): Int
}
"""


class Probe:
    """Counts subscription source generators started and finished (their ``finally`` ran)."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.counter = 0


def sse_test_plugin(probe: Probe) -> types.SimpleNamespace:
    async def greeting(parent, args, context, info):
        return "hello"

    async def whoami(parent, args, context, info):
        return context.identity

    async def bump(parent, args, context, info):
        probe.counter += args["by"]
        return probe.counter

    async def countdown(parent, args, context, info):
        probe.started += 1
        try:
            for i in range(args["from"], -1, -1):
                yield {"countdown": i}
        finally:
            probe.finished += 1

    async def boom(parent, args, context, info):
        yield {"boom": 1}
        raise RuntimeError("secret detail that must not leak")

    async def flood(parent, args, context, info):
        probe.started += 1
        try:
            while True:
                yield {"flood": "x" * args["size"]}
                # Real sources wait for something; one that never suspends
                # would hold the event loop wherever it is iterated.
                await asyncio.sleep(0)
        finally:
            probe.finished += 1

    async def forever(parent, args, context, info):
        probe.started += 1
        try:
            yield {"forever": 1}
            await asyncio.Event().wait()
        finally:
            probe.finished += 1

    async def step(operation, call_next):
        # Driven by the request's extensions, so one plugin serves every test.
        extensions = operation.extensions or {}
        if extensions.get("reject"):
            raise GraphQLError("slow down", "RATE_LIMITED", headers={"Retry-After": "7"})
        if extensions.get("slowStart"):
            await asyncio.sleep(float(extensions["slowStart"]))
        operation.response_headers["X-Step"] = "ran"
        return await call_next(operation)

    plugin = types.SimpleNamespace(plugboard_name="sse_test", __name__="sse_test")
    plugin.plugboard_operation_steps = hookimpl(lambda: [step])
    plugin.plugboard_schema = hookimpl(lambda: SDL)
    plugin.plugboard_resolvers = hookimpl(lambda: {"Query.greeting": greeting, "Query.whoami": whoami, "Mutation.bump": bump})
    plugin.plugboard_subscriptions = hookimpl(
        lambda: {
            "Subscription.countdown": countdown,
            "Subscription.boom": boom,
            "Subscription.flood": flood,
            "Subscription.forever": forever,
        }
    )
    return plugin


def settings(**realtime: Any) -> dict[str, Any]:
    """Realtime settings with only what these tests need (no WebSocket transport, channels or features)."""
    base: dict[str, Any] = {
        "websockets": False,
        "channels": {"enabled": False},
        "features": {"presence": False, "chat": False, "notifications": False},
    }
    for key, value in realtime.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {"realtime": base}


@pytest.fixture
def probe() -> Probe:
    return Probe()


class ProductionTestServer(TestServer):
    """A test server that, like ``plugboard serve``, does not cancel handlers when clients disconnect.

    aiohttp's TestServer turns ``handler_cancellation`` on, which would hide
    whether the transport notices a vanished client by itself.
    """

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return web.AppRunner(self.app, **kwargs)


@pytest.fixture
def sse_client(make_realtime_app, aiohttp_client, probe):
    async def make(data: dict[str, Any] | None = None, **realtime: Any):
        app_data = settings(**realtime)
        app_data.update(data or {})
        return await aiohttp_client(ProductionTestServer(make_realtime_app(app_data, plugins=[sse_test_plugin(probe)])))

    return make


@pytest.fixture
async def client(sse_client):
    return await sse_client()


def sse_transport(client) -> SSETransport:
    return next(t for t in client.app[keys.TRANSPORTS] if t.name == "sse")


async def post_stream(client, body: Any, *, headers: dict[str, str] | None = None, raw: str | None = None):
    hdrs = {"Accept": SSE, "Content-Type": JSON, **(headers or {})}
    return await client.post("/graphql", data=raw if raw is not None else json.dumps(body), headers=hdrs)


async def get_stream(client, params: dict[str, str], *, headers: dict[str, str] | None = None):
    return await client.get("/graphql", params=params, headers={"Accept": SSE, **(headers or {})})


async def error_of(resp, status: int) -> str:
    assert resp.status == status, (resp.status, await resp.text())
    assert resp.content_type == JSON
    body = await resp.json()
    assert "data" not in body
    return body["errors"][0]["message"]


# ---------------------------------------------------------------------------
# Distinct connections mode
# ---------------------------------------------------------------------------


async def test_distinct_post_subscription_streams_next_then_complete(client, probe):
    resp = await post_stream(client, {"query": "subscription { countdown(from: 2) }"})
    assert resp.status == 200
    assert resp.content_type == SSE
    assert resp.headers["X-Request-ID"]
    assert resp.headers["X-Step"] == "ran"  # response headers an operation step asked for
    reader = EventStream(resp)
    assert await reader.until_complete() == [
        ("next", {"data": {"countdown": 2}}),
        ("next", {"data": {"countdown": 1}}),
        ("next", {"data": {"countdown": 0}}),
        ("complete", ""),
    ]
    assert await reader.ended()
    assert probe.finished == 1


async def test_distinct_get_subscription_with_variables(client):
    resp = await get_stream(
        client,
        {"query": "subscription Down($n: Int!) { countdown(from: $n) }", "variables": json.dumps({"n": 1}), "operationName": "Down"},
    )
    assert resp.status == 200
    events = await EventStream(resp).until_complete()
    assert events == [("next", {"data": {"countdown": 1}}), ("next", {"data": {"countdown": 0}}), ("complete", "")]


async def test_distinct_query_and_mutation_give_one_next(client, probe):
    resp = await post_stream(client, {"query": "{ greeting whoami }"}, headers={"Authorization": "Bearer alice"})
    assert await EventStream(resp).until_complete() == [("next", {"data": {"greeting": "hello", "whoami": "alice"}}), ("complete", "")]
    resp = await get_stream(client, {"query": "{ greeting }"})
    assert await EventStream(resp).until_complete() == [("next", {"data": {"greeting": "hello"}}), ("complete", "")]
    resp = await post_stream(client, {"query": "mutation { bump(by: 3) }"})
    assert await EventStream(resp).until_complete() == [("next", {"data": {"bump": 3}}), ("complete", "")]
    assert probe.counter == 3


async def test_wire_format(client):
    resp = await post_stream(client, {"query": "{ greeting }"})
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.read() == b'event: next\ndata: {"data":{"greeting":"hello"}}\n\nevent: complete\ndata: \n\n'


async def test_subscription_raising_mid_stream_sends_errors_then_complete(client):
    resp = await post_stream(client, {"query": "subscription { boom }"})
    events = await EventStream(resp).until_complete()
    assert events[0] == ("next", {"data": {"boom": 1}})
    name, result = events[1]
    assert name == "next"
    assert result["errors"][0]["message"] == "Internal server error"
    assert result["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret detail" not in json.dumps(result)
    assert events[2] == ("complete", "")
    # The server keeps serving after the failure.
    resp = await post_stream(client, {"query": "{ greeting }"})
    assert (await EventStream(resp).until_complete())[0] == ("next", {"data": {"greeting": "hello"}})


@pytest.mark.parametrize(
    "raw, status, message",
    [
        ("{not json", 400, "not valid JSON"),
        ('"a string"', 400, "must be a JSON object"),
        ("{}", 400, "'query' is missing"),
        ('{"query": 42}', 400, "'query' must be a string"),
        ('{"query": "{ greeting }", "variables": [1]}', 400, "'variables' must be an object"),
    ],
)
async def test_distinct_post_request_errors_are_json_before_the_stream(client, probe, raw, status, message):
    resp = await post_stream(client, None, raw=raw)
    assert message in await error_of(resp, status)
    assert probe.started == 0


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"query": "subscription { countdown(from: "}', "syntax error"),
        ('{"query": "subscription { nope }"}', "nope"),
        ('{"query": "query A { greeting } query B { greeting }"}', "operationName is required"),
    ],
)
async def test_distinct_invalid_documents_are_a_next_event_then_complete(client, probe, raw, message):
    # graphql-sse PROTOCOL.md: a valid request whose document does not
    # validate is accepted, and its errors are the stream's one result.
    resp = await post_stream(client, None, raw=raw)
    assert resp.status == 200 and resp.content_type == SSE, await resp.text()
    [(name, result), complete] = await EventStream(resp).until_complete()
    assert name == "next" and "data" not in result and message in result["errors"][0]["message"], result
    assert all("path" not in e for e in result["errors"]), result
    assert complete == ("complete", "")
    assert probe.started == 0


async def test_operation_step_rejection_keeps_its_status_and_headers(client, probe):
    body = {"query": "subscription { countdown(from: 1) }", "extensions": {"reject": True}}
    resp = await post_stream(client, body)
    assert await error_of(resp, 429) == "slow down"
    assert resp.headers["Retry-After"] == "7"
    token = await reserve(client)
    resp = await client.post("/graphql", data=json.dumps({**body, "extensions": {"reject": True, "operationId": "r"}}), headers={"Content-Type": JSON, TOKEN_HEADER: token})
    assert await error_of(resp, 429) == "slow down"
    assert probe.started == 0
    # The rejected id is free again.
    assert (await send_op(client, token, "{ greeting }", "r")).status == 202


async def test_distinct_get_request_errors(client):
    resp = await get_stream(client, {"query": "mutation { bump(by: 1) }"})
    assert "mutation" in await error_of(resp, 405)
    assert resp.headers["Allow"] == "POST"
    resp = await get_stream(client, {"operationName": "X"})
    assert "'query' is missing" in await error_of(resp, 400)
    resp = await get_stream(client, {"query": "{ greeting }", "variables": "{nope"})
    assert "'variables' is not valid JSON" in await error_of(resp, 400)


async def test_distinct_wrong_content_type_and_oversized_body(sse_client):
    client = await sse_client({"graphql": {"max_body_size": "1KB"}})
    resp = await client.post("/graphql", data="{ greeting }", headers={"Accept": SSE, "Content-Type": "text/plain"})
    assert "unsupported content type" in await error_of(resp, 415)
    resp = await post_stream(client, {"query": "{ greeting }", "variables": {"pad": "x" * 2000}})
    assert "larger than 1024 bytes" in await error_of(resp, 413)


async def test_context_hook_rejections_are_401_and_403(client, probe):
    for token, status in (("bad", 401), ("banned", 403)):
        auth = {"Authorization": f"Bearer {token}"}
        resp = await post_stream(client, {"query": "subscription { countdown(from: 1) }"}, headers=auth)
        assert await error_of(resp, status)
        resp = await client.put("/graphql", headers=auth)
        assert await error_of(resp, status)
    assert probe.started == 0


async def test_subscriptions_switched_off_are_rejected(sse_client, probe):
    client = await sse_client(subscriptions=False)
    resp = await post_stream(client, {"query": "subscription { countdown(from: 1) }"})
    assert "subscription operations are not allowed" in await error_of(resp, 400)
    resp = await get_stream(client, {"query": "subscription { countdown(from: 1) }"})
    assert "subscription operations are not allowed" in await error_of(resp, 400)
    assert probe.started == 0
    resp = await post_stream(client, {"query": "{ greeting }"})
    assert (await EventStream(resp).until_complete())[0] == ("next", {"data": {"greeting": "hello"}})


async def test_sse_switched_off_leaves_the_path_to_plain_http(sse_client):
    client = await sse_client(server_sent_events=False)
    assert not any(t.name == "sse" for t in client.app[keys.TRANSPORTS])
    resp = await client.put("/graphql")
    assert resp.status == 405
    resp = await post_stream(client, {"query": "{ greeting }"})
    assert resp.status == 406
    assert resp.content_type != SSE


async def test_works_with_every_realtime_default(make_realtime_app, aiohttp_client, probe):
    client = await aiohttp_client(ProductionTestServer(make_realtime_app(plugins=[sse_test_plugin(probe)])))
    resp = await post_stream(client, {"query": "subscription { countdown(from: 0) }"})
    assert await EventStream(resp).until_complete() == [("next", {"data": {"countdown": 0}}), ("complete", "")]


# ---------------------------------------------------------------------------
# Single connection mode
# ---------------------------------------------------------------------------


async def reserve(client, headers: dict[str, str] | None = None) -> str:
    resp = await client.put("/graphql", headers=headers or {})
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "text/plain"
    token = await resp.text()
    assert len(token) >= 32
    return token


async def open_stream(client, token: str, *, in_query: bool = False):
    if in_query:
        resp = await client.get("/graphql", params={"token": token}, headers={"Accept": SSE})
    else:
        resp = await client.get("/graphql", headers={"Accept": SSE, TOKEN_HEADER: token})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == SSE
    return resp


async def send_op(client, token: str, query: str, op_id: str | None, *, headers: dict[str, str] | None = None, variables: dict | None = None):
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    if op_id is not None:
        body["extensions"] = {"operationId": op_id}
    hdrs = {"Content-Type": JSON, TOKEN_HEADER: token, **(headers or {})}
    return await client.post("/graphql", data=json.dumps(body), headers=hdrs)


async def read_single(reader: EventStream, count: int) -> list[tuple[str, Any]]:
    out = []
    for _ in range(count):
        name, data = await reader.event()
        out.append((name, json.loads(data)))
    return out


async def test_single_connection_mode_end_to_end(client, probe):
    token = await reserve(client, {"Authorization": "Bearer alice"})
    resp = await open_stream(client, token)
    reader = EventStream(resp)
    auth = {"Authorization": "Bearer alice"}
    r = await send_op(client, token, "subscription($n: Int!) { countdown(from: $n) }", "sub-1", headers=auth, variables={"n": 1})
    assert r.status == 202
    events = await read_single(reader, 3)
    assert events == [
        ("next", {"id": "sub-1", "payload": {"data": {"countdown": 1}}}),
        ("next", {"id": "sub-1", "payload": {"data": {"countdown": 0}}}),
        ("complete", {"id": "sub-1"}),
    ]
    r = await send_op(client, token, "{ whoami }", "q-1", headers=auth)
    assert r.status == 202
    r = await send_op(client, token, "mutation { bump(by: 2) }", "m-1", headers=auth)
    assert r.status == 202
    assert await read_single(reader, 4) == [
        ("next", {"id": "q-1", "payload": {"data": {"whoami": "alice"}}}),
        ("complete", {"id": "q-1"}),
        ("next", {"id": "m-1", "payload": {"data": {"bump": 2}}}),
        ("complete", {"id": "m-1"}),
    ]
    # A finished operation's id may be used again.
    r = await send_op(client, token, "{ greeting }", "q-1", headers=auth)
    assert r.status == 202
    assert await read_single(reader, 2) == [("next", {"id": "q-1", "payload": {"data": {"greeting": "hello"}}}), ("complete", {"id": "q-1"})]


async def test_single_mode_token_in_url_and_operations_before_the_stream_opens(client):
    token = await reserve(client)
    r = await send_op(client, token, "subscription { countdown(from: 1) }", "early")
    assert r.status == 202
    reader = EventStream(await open_stream(client, token, in_query=True))
    assert await read_single(reader, 3) == [
        ("next", {"id": "early", "payload": {"data": {"countdown": 1}}}),
        ("next", {"id": "early", "payload": {"data": {"countdown": 0}}}),
        ("complete", {"id": "early"}),
    ]


async def test_single_mode_errors_mid_stream_keep_the_stream_up(client):
    token = await reserve(client)
    reader = EventStream(await open_stream(client, token))
    assert (await send_op(client, token, "subscription { boom }", "b")).status == 202
    events = await read_single(reader, 3)
    assert events[0] == ("next", {"id": "b", "payload": {"data": {"boom": 1}}})
    assert events[1][1]["payload"]["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert events[2] == ("complete", {"id": "b"})
    assert (await send_op(client, token, "{ greeting }", "g")).status == 202
    assert (await read_single(reader, 1))[0] == ("next", {"id": "g", "payload": {"data": {"greeting": "hello"}}})


async def test_delete_stops_one_operation(client, probe):
    token = await reserve(client)
    reader = EventStream(await open_stream(client, token))
    # Different tags: the core would otherwise share one source between the two.
    assert (await send_op(client, token, 'subscription { forever(tag: "1") }', "f1")).status == 202
    assert (await send_op(client, token, 'subscription { forever(tag: "2") }', "f2")).status == 202
    assert sorted(await read_single(reader, 2), key=lambda e: e[1]["id"]) == [
        ("next", {"id": "f1", "payload": {"data": {"forever": 1}}}),
        ("next", {"id": "f2", "payload": {"data": {"forever": 1}}}),
    ]
    r = await client.delete("/graphql", params={"operationId": "f1"}, headers={TOKEN_HEADER: token})
    assert r.status == 200
    assert await read_single(reader, 1) == [("complete", {"id": "f1"})]
    assert probe.finished == 1
    stream = client.app[SSE_STATE].reservations[token]
    assert list(stream.operations) == ["f2"]
    # Stopping an operation that already ended is not an error.
    r = await client.delete("/graphql", params={"operationId": "f1", "token": token})
    assert r.status == 200
    # The stream is still up for f2 and new operations.
    assert (await send_op(client, token, "{ greeting }", "g")).status == 202
    assert await read_single(reader, 2) == [("next", {"id": "g", "payload": {"data": {"greeting": "hello"}}}), ("complete", {"id": "g"})]


async def test_delete_while_the_operation_is_still_starting(client, probe):
    token = await reserve(client)
    reader = EventStream(await open_stream(client, token))
    body = {"query": "subscription { forever }", "extensions": {"operationId": "s", "slowStart": 0.3}}
    post = asyncio.ensure_future(client.post("/graphql", data=json.dumps(body), headers={"Content-Type": JSON, TOKEN_HEADER: token}))
    await eventually(lambda: "s" in client.app[SSE_STATE].reservations[token].operations)
    r = await client.delete("/graphql", params={"operationId": "s"}, headers={TOKEN_HEADER: token})
    assert r.status == 200
    assert (await post).status == 202
    assert await read_single(reader, 1) == [("complete", {"id": "s"})]
    assert probe.started == 0
    assert not client.app[SSE_STATE].reservations[token].operations


async def test_single_mode_error_statuses(client, probe):
    token = await reserve(client, {"Authorization": "Bearer alice"})
    alice = {"Authorization": "Bearer alice"}
    unknown = "x" * 32
    # GET: unknown token 404; a second GET for an open stream 409.
    resp = await client.get("/graphql", headers={"Accept": SSE, TOKEN_HEADER: unknown})
    assert "unknown or expired" in await error_of(resp, 404)
    stream_resp = await open_stream(client, token)
    resp = await client.get("/graphql", headers={"Accept": SSE, TOKEN_HEADER: token})
    assert "already open" in await error_of(resp, 409)
    # POST: unknown token, missing operation id, bad documents, bad JSON.
    assert "unknown or expired" in await error_of(await send_op(client, unknown, "{ greeting }", "a", headers=alice), 404)
    assert "operationId" in await error_of(await send_op(client, token, "{ greeting }", None, headers=alice), 400)
    assert "nope" in await error_of(await send_op(client, token, "subscription { nope }", "a", headers=alice), 400)
    resp = await client.post("/graphql", data="{oops", headers={"Content-Type": JSON, TOKEN_HEADER: token})
    assert "not valid JSON" in await error_of(resp, 400)
    # POST: a duplicate of a running operation's id is 409.
    assert (await send_op(client, token, "subscription { forever }", "dup", headers=alice)).status == 202
    assert "already running" in await error_of(await send_op(client, token, "subscription { forever }", "dup", headers=alice), 409)
    # Another identity may neither run nor stop operations on alice's stream.
    bob = {"Authorization": "Bearer bob"}
    assert "another identity" in await error_of(await send_op(client, token, "{ greeting }", "b", headers=bob), 403)
    resp = await client.delete("/graphql", params={"operationId": "dup"}, headers={TOKEN_HEADER: token, **bob})
    assert "another identity" in await error_of(resp, 403)
    # The context hook still answers first.
    assert await error_of(await send_op(client, token, "{ greeting }", "c", headers={"Authorization": "Bearer bad"}), 401)
    # DELETE: missing token, missing operation id, unknown token.
    assert "token is missing" in await error_of(await client.delete("/graphql", params={"operationId": "dup"}), 400)
    resp = await client.delete("/graphql", headers={TOKEN_HEADER: token, **alice})
    assert "'operationId' is missing" in await error_of(resp, 400)
    resp = await client.delete("/graphql", params={"operationId": "dup"}, headers={TOKEN_HEADER: unknown})
    assert await error_of(resp, 404)
    assert probe.started == 1 and probe.finished == 0
    stream_resp.close()
    await eventually(lambda: probe.finished == 1)


async def test_reserved_token_expires_when_never_opened(client, probe):
    sse_transport(client).reservation_ttl = 0.2
    token = await reserve(client)
    assert (await send_op(client, token, "subscription { forever }", "f")).status == 202
    state = client.app[SSE_STATE]
    assert token in state.reservations
    await eventually(lambda: token not in state.reservations)
    resp = await client.get("/graphql", headers={"Accept": SSE, TOKEN_HEADER: token})
    assert await error_of(resp, 404)
    # The operation sent before the stream opened was stopped with it.
    await eventually(lambda: probe.finished == 1)
    assert not client.app[CONNECTION_LIMITER].open("sse")


async def test_token_is_freed_when_its_stream_closes_and_cannot_be_reused(sse_client, probe):
    client = await sse_client()
    token = await reserve(client)
    resp = await open_stream(client, token)
    assert (await send_op(client, token, "subscription { forever }", "f")).status == 202
    await EventStream(resp).event()
    resp.close()
    state = client.app[SSE_STATE]
    await eventually(lambda: token not in state.reservations and not state.live)
    await eventually(lambda: probe.finished == 1)
    resp = await client.get("/graphql", headers={"Accept": SSE, TOKEN_HEADER: token})
    assert await error_of(resp, 404)
    assert await error_of(await send_op(client, token, "{ greeting }", "g"), 404)
    assert not client.app[CONNECTION_LIMITER].open("sse")


async def test_reservations_per_ip_are_limited(sse_client):
    client = await sse_client(sse={"max_connections_per_ip": 2})
    first = await reserve(client)
    await reserve(client)
    resp = await client.put("/graphql")
    assert "too many reserved event streams" in await error_of(resp, 429)
    # Closing one frees its place.
    resp = await open_stream(client, first)
    resp.close()
    state = client.app[SSE_STATE]
    await eventually(lambda: first not in state.reservations)
    await reserve(client)


async def test_distinct_streams_per_ip_are_limited_with_reservations(sse_client, probe):
    # One limit per client address for both modes (issue 9, item 7): distinct
    # streams had none.
    client = await sse_client(sse={"max_connections_per_ip": 2})
    limiter = client.app[CONNECTION_LIMITER]
    first = await post_stream(client, {"query": "subscription { forever }"})
    assert first.status == 200
    token = await reserve(client)
    assert limiter.open("sse") == {"127.0.0.1": 2}
    assert "too many event streams" in await error_of(await post_stream(client, {"query": "subscription { forever }"}), 429)
    assert "too many reserved event streams" in await error_of(await client.put("/graphql"), 429)
    # A request refused before its stream starts gives its place back.
    assert limiter.open("sse") == {"127.0.0.1": 2}
    first.close()
    await eventually(lambda: limiter.count("sse", "127.0.0.1") == 1)
    second = await post_stream(client, {"query": "{ greeting }"})
    assert second.status == 200
    await EventStream(second).until_complete()
    await eventually(lambda: limiter.count("sse", "127.0.0.1") == 1)
    invalid = await post_stream(client, {"query": "{ nope }"})
    assert invalid.status == 200
    await EventStream(invalid).until_complete()
    await eventually(lambda: limiter.count("sse", "127.0.0.1") == 1)
    resp = await open_stream(client, token)
    resp.close()
    await eventually(lambda: not limiter.open("sse"))
    await eventually(lambda: probe.finished == 1)


async def test_operations_per_stream_are_limited(sse_client):
    client = await sse_client(websocket={"max_subscriptions_per_connection": 1})
    token = await reserve(client)
    assert (await send_op(client, token, "subscription { forever }", "a")).status == 202
    assert "too many operations" in await error_of(await send_op(client, token, "subscription { forever }", "b"), 429)


# ---------------------------------------------------------------------------
# Keep-alive, identity expiry, slow readers and vanished clients
# ---------------------------------------------------------------------------


async def test_keepalive_comments_arrive(sse_client):
    client = await sse_client(sse={"keepalive": "200ms"})
    resp = await post_stream(client, {"query": "subscription { forever }"})
    reader = EventStream(resp)
    assert await reader.event() == ("next", json.dumps({"data": {"forever": 1}}, separators=(",", ":")))
    with pytest.raises(TimeoutError):
        await reader.event(timeout=0.75)
    assert len(reader.comments) >= 2
    assert all(c.startswith(":") for c in reader.comments)
    resp.close()


async def test_one_task_per_app_pings_every_open_stream(sse_client):
    client = await sse_client(sse={"keepalive": "200ms"})
    readers = []
    for i in range(3):
        resp = await post_stream(client, {"query": "subscription($t: String) { forever(tag: $t) }", "variables": {"t": str(i)}})
        readers.append(EventStream(resp))
        await readers[-1].event()
    token = await reserve(client)
    readers.append(EventStream(await open_stream(client, token)))
    # Idle streams, both modes: each gets a comment every keep-alive interval.
    await asyncio.sleep(0.7)
    for reader in readers:
        with pytest.raises(TimeoutError):
            await reader.event(timeout=0.05)
        assert len(reader.comments) >= 2
        assert set(reader.comments) == {": ping"}
    watchers = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "SSETransport._watch"]
    assert len(watchers) == 1
    assert stream_tasks() == ["produce"] * 3  # the producers; nothing per stream for keep-alive
    for reader in readers:
        reader.resp.close()


async def test_a_stream_limits_how_long_sent_data_may_stay_unacknowledged(client):
    tcp_user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if tcp_user_timeout is None:
        pytest.skip("TCP_USER_TIMEOUT is Linux only")
    resp = await post_stream(client, {"query": "subscription { forever }"})
    await EventStream(resp).event()
    (stream,) = client.app[SSE_STATE].live
    sock = stream.request.transport.get_extra_info("socket")
    # A peer that vanished is then found by the next ping (or event).
    assert sock.getsockopt(socket.IPPROTO_TCP, tcp_user_timeout) == int(SEND_TIMEOUT * 1000)
    resp.close()


async def test_subscription_ends_when_the_identity_expires(client, probe):
    expires = time.time() + 0.4
    resp = await post_stream(client, {"query": "subscription { forever }"}, headers={"Authorization": f"Bearer alice@{expires}"})
    events = await EventStream(resp).until_complete()
    assert events[0] == ("next", {"data": {"forever": 1}})
    assert events[1][1]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert events[2] == ("complete", "")
    assert time.time() >= expires
    assert probe.finished == 1


async def test_subscription_with_an_already_expired_identity_is_403(client, probe):
    auth = {"Authorization": f"Bearer alice@{time.time() - 1}"}
    resp = await post_stream(client, {"query": "subscription { forever }"}, headers=auth)
    assert "expired" in await error_of(resp, 403)
    token = await reserve(client, auth)
    assert "expired" in await error_of(await send_op(client, token, "subscription { forever }", "x", headers=auth), 403)
    assert probe.started == 0


# The core's shared subscription streams (graphql.share_subscriptions) close a
# source by cancelling the task that iterates it; a source that is busy (not
# parked inside the plugin's generator) then has its ``finally`` run only at the
# next garbage collection. These two tests check this transport's cleanup of a
# busy source, so they run each subscription on its own.
NOT_SHARED = {"graphql": {"share_subscriptions": False}}


async def test_slow_reader_drop_oldest_keeps_memory_bounded(sse_client, probe):
    client = await sse_client(NOT_SHARED, queue_size=8, overflow="drop_oldest")
    resp = await post_stream(client, {"query": "subscription { flood(size: 16384) }"})
    assert resp.status == 200
    state = client.app[SSE_STATE]
    await eventually(lambda: len(state.live) == 1)
    (stream,) = state.live
    # The client never reads: the socket buffers fill, then the queue, then drops begin.
    await eventually(lambda: stream.dropped > 100, timeout=20)
    for _ in range(20):
        assert len(stream) <= 8
        transport = stream.request.transport
        assert transport is not None and transport.get_write_buffer_size() < 1024 * 1024
        before = stream.dropped
        await asyncio.sleep(0.02)
        assert stream.dropped > before  # the producer is not blocked by the slow reader
    resp.close()
    await eventually(lambda: probe.finished == 1 and not state.live)


async def test_slow_reader_overflow_close_ends_the_stream(sse_client, probe):
    client = await sse_client(NOT_SHARED, queue_size=8, overflow="close")
    resp = await post_stream(client, {"query": "subscription { flood(size: 16384) }"})
    assert resp.status == 200
    state = client.app[SSE_STATE]
    await eventually(lambda: len(state.live) == 1)
    (stream,) = state.live
    await eventually(lambda: probe.finished == 1 and not state.live, timeout=20)
    assert stream.overflowed
    assert stream.dropped == 0
    # The connection was aborted: what reached the client ends without a complete event.
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    resp.close()


async def test_a_client_that_takes_nothing_is_aborted(sse_client, probe, monkeypatch):
    monkeypatch.setattr(sse, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(sse, "SWEEP_INTERVAL", 0.1)
    client = await sse_client(NOT_SHARED, queue_size=8, overflow="drop_oldest")
    resp = await post_stream(client, {"query": "subscription { flood(size: 16384) }"})
    assert resp.status == 200
    state = client.app[SSE_STATE]
    # The client never reads: the socket buffers fill, a write waits, and the
    # watcher aborts the connection once that write has waited SEND_TIMEOUT.
    await eventually(lambda: probe.finished == 1 and not state.live, timeout=10)
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    resp.close()


async def test_vanished_client_frees_the_subscription(sse_client, probe):
    client = await sse_client()  # the default 15 s keep-alive: no ping is needed to notice
    state = client.app[SSE_STATE]
    for i in range(100):
        # Distinct variables: each is its own source (the core shares equal ones).
        resp = await post_stream(client, {"query": "subscription($t: String) { forever(tag: $t) }", "variables": {"t": str(i)}})
        await EventStream(resp).event()
        resp.close()  # drops the connection without ending the stream
    await eventually(lambda: probe.finished == 100 and not state.live)
    await asyncio.sleep(0.05)
    assert stream_tasks() == []


def stream_tasks() -> list[str]:
    """Names of live tasks that belong to one SSE stream: its producers (and aiohttp-sse ping tasks, were one to come back)."""
    names = []
    for task in asyncio.all_tasks():
        name = getattr(task.get_coro(), "__qualname__", "")
        if name in ("produce", "EventSourceResponse._ping"):
            names.append(name)
    return names


async def test_shutdown_ends_open_streams(sse_client, probe):
    client = await sse_client()
    distinct = await post_stream(client, {"query": 'subscription { forever(tag: "distinct") }'})
    await EventStream(distinct).event()
    token = await reserve(client)
    single = EventStream(await open_stream(client, token))
    assert (await send_op(client, token, "subscription { forever }", "f")).status == 202
    await single.event()
    reserved_only = await reserve(client)
    # Two producers, and no ping task per stream (the app's one watcher pings).
    assert stream_tasks() == ["produce", "produce"]
    started = time.monotonic()
    await client.server.close()
    assert time.monotonic() - started < 2
    assert probe.finished == 2
    assert stream_tasks() == []
    state = client.app[SSE_STATE]
    assert not state.live and not state.reservations and not client.app[CONNECTION_LIMITER].open("sse")
    assert reserved_only not in state.reservations
    assert state.watcher.done()
