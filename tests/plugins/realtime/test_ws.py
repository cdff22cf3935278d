"""GraphQL over WebSocket (graphql-transport-ws) on a real server on loopback.

Every close code, ping/pong, queries and mutations over the socket, client
``complete``, the limits, identity expiry, shutdown, a third-party client
(``gql``) and a leak check over 1,000 abrupt disconnects. The operations come
from a test plugin defined here, so nothing depends on the pubsub providers.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import struct
import time
import types
from typing import Any

import aiohttp
import pytest

from plugboard import hookimpl
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.limiter import CONNECTION_LIMITER
from plugboard.plugins.realtime.ws import WS_STATE, choose_subprotocol
from plugboard.plugins.realtime.ws_messages import dumps as ws_dumps
from plugboard.testing import eventually
from plugboard.transports import http

TWS = "graphql-transport-ws"
LEGACY = "graphql-ws"
FEATURES_OFF = {"presence": False, "chat": False, "notifications": False}


# ---------------------------------------------------------------------------
# The test plugin: a few operations, and a probe recording what they saw.
# ---------------------------------------------------------------------------


class Probe:
    """Counts open subscription sources and context builds (per app, not global)."""

    def __init__(self) -> None:
        self.open_streams = 0
        self.closed_streams = 0
        self.context_builds = 0


def ws_test_plugin(probe: Probe) -> types.SimpleNamespace:
    async def countdown(parent, args, context, info):
        probe.open_streams += 1
        try:
            for n in range(args["from"], -1, -1):
                yield {"countdown": n}
                await asyncio.sleep(0.001)
        finally:
            probe.open_streams -= 1
            probe.closed_streams += 1

    async def forever(parent, args, context, info):
        probe.open_streams += 1
        try:
            n = 0
            while True:
                yield {"forever": n}
                n += 1
                # Slow enough that a client's reaction to one event lands
                # while the source waits here, not while an event executes
                # (see the note on ``idle``).
                await asyncio.sleep(0.05)
        finally:
            probe.open_streams -= 1
            probe.closed_streams += 1

    async def idle(parent, args, context, info):
        # One event, then silence: only cancellation ends it. Tests that
        # close at an arbitrary moment use this: a shared stream stopped
        # while the engine executes an event leaves its source to the
        # garbage collector (a core issue, not this transport's).
        probe.open_streams += 1
        try:
            yield {"idle": 0}
            await asyncio.get_running_loop().create_future()
        finally:
            probe.open_streams -= 1
            probe.closed_streams += 1

    async def stubborn(parent, args, context, info):
        # Misses its first cancellation, as a task does whose cancellation
        # lands on a redis-py write on Python 3.11 (see plugboard.cancelling).
        probe.open_streams += 1
        missed = False
        try:
            n = 0
            while True:
                yield {"stubborn": n}
                n += 1
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    if missed:
                        raise
                    missed = True
        finally:
            probe.open_streams -= 1
            probe.closed_streams += 1

    async def boom(parent, args, context, info):
        yield {"boom": 1}
        raise GraphQLError("kaboom", "BOOM")

    async def crash(parent, args, context, info):
        yield {"crash": 1}
        raise RuntimeError("secret detail")

    async def hello(parent, args, context, info):
        return f"hello {args.get('name') or 'world'}"

    async def whoami(parent, args, context, info):
        return context.identity

    async def add(parent, args, context, info):
        return args["a"] + args["b"]

    def schema():
        return """
        extend type Query { hello(name: String): String! whoami: String }
        extend type Mutation { add(a: Int!, b: Int!): Int! }
        extend type Subscription {
          countdown(from: Int!): Int!
          forever(tag: String): Int!
          idle(tag: String): Int!
          stubborn: Int!
          boom: Int!
          crash: Int!
        }
        """

    def resolvers():
        return {"Query.hello": hello, "Query.whoami": whoami, "Mutation.add": add}

    def subscriptions():
        return {
            "Subscription.countdown": countdown,
            "Subscription.forever": forever,
            "Subscription.idle": idle,
            "Subscription.stubborn": stubborn,
            "Subscription.boom": boom,
            "Subscription.crash": crash,
        }

    def context_hook(context, request, connection_params):
        probe.context_builds += 1
        if connection_params and connection_params.get("authToken") == "crash":
            raise RuntimeError("context hook bug")
        return None

    plugin = types.SimpleNamespace(plugboard_name="wstest", __name__="wstest")
    plugin.plugboard_schema = hookimpl(schema)
    plugin.plugboard_resolvers = hookimpl(resolvers)
    plugin.plugboard_subscriptions = hookimpl(subscriptions)
    plugin.plugboard_context = hookimpl(context_hook)
    return plugin


def settings(websocket: dict | None = None, **realtime: Any) -> dict:
    # Features and direct channels off: these tests are about the transport.
    section = {"features": FEATURES_OFF, "channels": {"enabled": False}, "websocket": websocket or {}, **realtime}
    return {"realtime": section}


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def start(make_realtime_app, aiohttp_client, probe):
    """``await start(websocket={...}, subscriptions=...)`` -> a test client on a real server."""

    async def go(websocket: dict | None = None, **realtime: Any):
        app = make_realtime_app(settings(websocket, **realtime), plugins=[ws_test_plugin(probe)])
        return await aiohttp_client(app)

    return go


@pytest.fixture
async def client(start):
    return await start()


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


async def connect(client, protocols=(TWS,), **kwargs) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect("/graphql", protocols=protocols, **kwargs)


async def recv(ws, timeout: float = 5.0) -> dict:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text message, got {msg}"
    return json.loads(msg.data)


async def closed_with(ws, timeout: float = 5.0) -> tuple[int, str]:
    """Read until the server's close frame; returns its code and reason."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            continue
        assert msg.type == aiohttp.WSMsgType.CLOSE, f"expected a close frame, got {msg}"
        return msg.data, msg.extra


async def init(ws, payload: dict | None = None) -> None:
    await ws.send_json({"type": "connection_init", "payload": payload if payload is not None else {"authToken": "alice"}})
    assert await recv(ws) == {"type": "connection_ack"}


async def ready(client, payload: dict | None = None) -> aiohttp.ClientWebSocketResponse:
    ws = await connect(client)
    await init(ws, payload)
    return ws


def subscribe(op_id: str, query: str, variables: dict | None = None, **extra: Any) -> dict:
    payload = {"query": query, **extra}
    if variables is not None:
        payload["variables"] = variables
    return {"id": op_id, "type": "subscribe", "payload": payload}


async def until_complete(ws, op_id: str) -> list[dict]:
    """Every message for ``op_id`` up to and including its complete (or error)."""
    out = []
    while True:
        message = await recv(ws)
        assert message.get("id") == op_id, message
        out.append(message)
        if message["type"] in ("complete", "error"):
            return out


# ---------------------------------------------------------------------------
# Subprotocol negotiation
# ---------------------------------------------------------------------------


def test_server_messages_are_encoded_as_http_results():
    # One JSON encoder for every transport: what a client reads over the
    # socket is byte for byte what it reads over HTTP and SSE.
    when = dt.datetime(2026, 12, 7, 10, 0, 0, 250000, tzinfo=dt.timezone.utc)
    message = {"id": "1", "type": "next", "payload": {"data": {"at": when, "big": 2**70, "text": "é\u2028"}}}
    assert ws_dumps(message) == http.dumps(message)
    assert json.loads(ws_dumps(message))["payload"]["data"] == {"at": "2026-12-07T10:00:00.250000+00:00", "big": 2**70, "text": "é\u2028"}


def test_choose_subprotocol_prefers_graphql_transport_ws():
    assert choose_subprotocol("graphql-ws, graphql-transport-ws") == TWS
    assert choose_subprotocol("graphql-ws") == LEGACY
    assert choose_subprotocol(" graphql-transport-ws ") == TWS
    assert choose_subprotocol("mqtt, graphql-transport-wsx") is None
    assert choose_subprotocol("") is None


async def test_negotiates_graphql_transport_ws_when_both_are_offered(client):
    ws = await connect(client, protocols=(LEGACY, TWS))
    assert ws.protocol == TWS
    await init(ws)
    await ws.close()


async def test_handshake_carries_the_request_id(client):
    ws = await connect(client, headers={"X-Request-ID": "ws-42"})
    assert ws._response.headers["X-Request-ID"] == "ws-42"
    await ws.close()


async def test_negotiates_legacy_when_only_it_is_offered(client):
    ws = await connect(client, protocols=(LEGACY,))
    assert ws.protocol == LEGACY
    await ws.close()


@pytest.mark.parametrize("protocols", [(), ("mqtt",)])
async def test_unknown_subprotocol_closes_4406(client, protocols):
    ws = await connect(client, protocols=protocols)
    assert ws.protocol is None
    assert await closed_with(ws) == (4406, "Subprotocol not acceptable")


async def test_plain_get_still_reaches_http_transport(client):
    # No Upgrade header: the WebSocket transport must not take the request.
    resp = await client.get("/graphql", params={"query": "{ hello }"}, headers={"Accept": "application/json", "apollo-require-preflight": "1"})
    assert resp.status == 200
    assert await resp.json() == {"data": {"hello": "hello world"}}


async def test_broken_upgrade_request_is_http_400(client):
    # Upgrade: websocket without the handshake headers: an HTTP error, not a crash.
    resp = await client.get("/graphql", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert resp.status == 400
    assert client.app[CONNECTION_LIMITER].open("websocket") == {}


# ---------------------------------------------------------------------------
# connection_init, auth, and the connection-level close codes
# ---------------------------------------------------------------------------


async def test_init_timeout_closes_4408(start):
    client = await start(websocket={"init_timeout": 0.2})
    ws = await connect(client)
    began = time.monotonic()
    assert await closed_with(ws) == (4408, "Connection initialisation timeout")
    assert 0.15 < time.monotonic() - began < 3


async def test_init_in_time_is_not_closed_by_the_timeout(start):
    client = await start(websocket={"init_timeout": 0.2})
    ws = await connect(client)
    await init(ws)
    await asyncio.sleep(0.4)
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    await ws.close()


async def test_second_init_closes_4429(client):
    ws = await ready(client)
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert await closed_with(ws) == (4429, "Too many initialisation requests")


async def test_subscribe_before_ack_closes_4401(client):
    ws = await connect(client)
    await ws.send_json(subscribe("1", "{ hello }"))
    assert await closed_with(ws) == (4401, "Unauthorized")


@pytest.mark.parametrize("token", ["bad", "banned"])
async def test_rejected_by_context_hook_closes_4403(client, token):
    ws = await connect(client)
    await ws.send_json({"type": "connection_init", "payload": {"authToken": token}})
    code, reason = await closed_with(ws)
    assert code == 4403
    assert reason.startswith("Forbidden")


async def test_context_hook_bug_closes_4500_and_is_logged(client, caplog):
    ws = await connect(client)
    await ws.send_json({"type": "connection_init", "payload": {"authToken": "crash"}})
    assert await closed_with(ws) == (4500, "Internal server error")
    assert any("context hook raised" in r.getMessage() for r in caplog.records)


async def test_init_without_payload_is_anonymous(client):
    ws = await connect(client)
    await ws.send_json({"type": "connection_init"})
    assert await recv(ws) == {"type": "connection_ack"}
    await ws.send_json(subscribe("1", "{ whoami }"))
    assert await until_complete(ws, "1") == [
        {"id": "1", "type": "next", "payload": {"data": {"whoami": None}}},
        {"id": "1", "type": "complete"},
    ]
    await ws.close()


async def test_duplicate_operation_id_closes_4409(client):
    ws = await ready(client)
    await ws.send_json(subscribe("dup", "subscription { forever }"))
    assert (await recv(ws))["type"] == "next"
    await ws.send_json(subscribe("dup", "subscription { forever }"))
    assert await closed_with(ws) == (4409, "Subscriber for dup already exists")


async def test_completed_id_may_be_reused(client):
    ws = await ready(client)
    for _ in range(2):
        await ws.send_json(subscribe("same", "{ hello }"))
        assert [m["type"] for m in await until_complete(ws, "same")] == ["next", "complete"]
    await ws.close()


INVALID_MESSAGES = [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected an object, got array"),
    ('"text"', "expected an object, got string"),
    ("{}", "'type' property is missing"),
    ('{"type": 7}', "'type' must be a string"),
    ('{"type": "wat"}', "unknown type 'wat'"),
    ('{"type": "subscribe", "payload": {"query": "{ hello }"}}', "needs a non-empty string 'id'"),
    ('{"type": "subscribe", "id": "", "payload": {"query": "{ hello }"}}', "needs a non-empty string 'id'"),
    ('{"type": "subscribe", "id": 5, "payload": {"query": "{ hello }"}}', "needs a non-empty string 'id'"),
    ('{"type": "subscribe", "id": "1"}', "payload must be an object, got null"),
    ('{"type": "subscribe", "id": "1", "payload": {"query": 5}}', "needs a 'query' string"),
    ('{"type": "subscribe", "id": "1", "payload": {"query": "{ hello }", "variables": [1]}}', "'variables' must be an object"),
    ('{"type": "subscribe", "id": "1", "payload": {"query": "{ hello }", "operationName": 3}}', "'operationName' must be a string"),
    ('{"type": "subscribe", "id": "1", "payload": {"query": "{ hello }", "extensions": "x"}}', "'extensions' must be an object"),
    ('{"type": "complete"}', "needs a non-empty string 'id'"),
    ('{"type": "ping", "payload": "x"}', "payload must be an object"),
    ('{"type": "next", "id": "1", "payload": {}}', "Unexpected message of type next"),
    ('{"type": "error", "id": "1", "payload": []}', "Unexpected message of type error"),
    ('{"type": "connection_ack"}', "Unexpected message of type connection_ack"),
]


@pytest.mark.parametrize("raw, expected", INVALID_MESSAGES)
async def test_invalid_message_closes_4400(client, raw, expected):
    ws = await ready(client)
    await ws.send_str(raw)
    code, reason = await closed_with(ws)
    assert code == 4400
    assert expected in reason
    assert len(reason.encode()) <= 123


async def test_invalid_init_payload_closes_4400(client):
    ws = await connect(client)
    await ws.send_json({"type": "connection_init", "payload": [1]})
    code, reason = await closed_with(ws)
    assert code == 4400 and "payload must be an object" in reason


async def test_binary_frames_are_read_as_utf8_json(client):
    ws = await connect(client)
    await ws.send_bytes(json.dumps({"type": "connection_init", "payload": {"authToken": "bob"}}).encode())
    assert await recv(ws) == {"type": "connection_ack"}
    await ws.send_bytes(b"\xff\xfe")
    code, reason = await closed_with(ws)
    assert code == 4400 and "not UTF-8" in reason


async def test_long_close_reasons_are_cut_to_the_frame_limit(client):
    ws = await ready(client)
    long_id = "x" * 500
    await ws.send_json(subscribe(long_id, "subscription { forever }"))
    assert (await recv(ws))["id"] == long_id
    await ws.send_json(subscribe(long_id, "subscription { forever }"))
    code, reason = await closed_with(ws)
    assert code == 4409
    assert reason.startswith("Subscriber for xxx") and reason.endswith("...")
    assert len(reason.encode()) <= 123


async def test_oversized_message_closes_1009(start):
    client = await start(websocket={"max_message_size": 1024})
    ws = await ready(client)
    await ws.send_json(subscribe("1", "{ hello(name: \"%s\") }" % ("a" * 900)))
    assert (await until_complete(ws, "1"))[0]["payload"] == {"data": {"hello": "hello " + "a" * 900}}
    await ws.send_json(subscribe("2", "{ hello(name: \"%s\") }" % ("a" * 2000)))
    code, _reason = await closed_with(ws)
    assert code == 1009


# ---------------------------------------------------------------------------
# Ping/pong and keep-alive
# ---------------------------------------------------------------------------


async def test_ping_is_answered_with_pong_echoing_the_payload(client):
    ws = await connect(client)
    # Allowed before connection_init too.
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    await init(ws)
    await ws.send_json({"type": "ping", "payload": {"t": 1}})
    assert await recv(ws) == {"type": "pong", "payload": {"t": 1}}
    # A client pong is accepted silently.
    await ws.send_json({"type": "pong", "payload": {"t": 2}})
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    await ws.close()


async def test_server_sends_protocol_pings_on_keepalive(start):
    client = await start(websocket={"keepalive": 0.2})
    ws = await connect(client, autoping=False)
    await init(ws)
    msg = await ws.receive(timeout=2)
    assert msg.type == aiohttp.WSMsgType.PING
    await ws.pong(msg.data)
    await ws.close()


async def test_client_that_never_answers_pings_is_dropped(start):
    client = await start(websocket={"keepalive": 0.2})
    ws = await connect(client, autoping=False)
    await init(ws)
    await eventually(lambda: not client.app[WS_STATE].connections, timeout=3)
    assert client.app[CONNECTION_LIMITER].open("websocket") == {}
    await ws.close()


# ---------------------------------------------------------------------------
# Operations: queries, mutations, subscriptions, errors
# ---------------------------------------------------------------------------


async def test_query_and_mutation_over_the_socket(client, probe):
    ws = await ready(client, {"authToken": "carol"})
    await ws.send_json(subscribe("q", "query Q($n: String) { hello(name: $n) whoami }", {"n": "Ada"}, operationName="Q"))
    assert await until_complete(ws, "q") == [
        {"id": "q", "type": "next", "payload": {"data": {"hello": "hello Ada", "whoami": "carol"}}},
        {"id": "q", "type": "complete"},
    ]
    await ws.send_json(subscribe("m", "mutation { add(a: 2, b: 40) }"))
    assert await until_complete(ws, "m") == [
        {"id": "m", "type": "next", "payload": {"data": {"add": 42}}},
        {"id": "m", "type": "complete"},
    ]
    # One context per connection, built at connection_init.
    assert probe.context_builds == 1
    await ws.close()


async def test_subscription_streams_then_completes(client, probe):
    ws = await ready(client)
    await ws.send_json(subscribe("c", "subscription($n: Int!) { countdown(from: $n) }", {"n": 3}))
    messages = await until_complete(ws, "c")
    assert [m["payload"] for m in messages[:-1]] == [{"data": {"countdown": n}} for n in (3, 2, 1, 0)]
    assert messages[-1] == {"id": "c", "type": "complete"}
    await eventually(lambda: probe.open_streams == 0)
    await ws.close()


async def test_concurrent_operations_are_multiplexed(client):
    ws = await ready(client)
    await ws.send_json(subscribe("a", "subscription { countdown(from: 5) }"))
    await ws.send_json(subscribe("b", "subscription { countdown(from: 5) }"))
    seen: dict[str, list] = {"a": [], "b": []}
    done: set[str] = set()
    while done != {"a", "b"}:
        message = await recv(ws)
        if message["type"] == "complete":
            done.add(message["id"])
        else:
            seen[message["id"]].append(message["payload"]["data"]["countdown"])
    assert seen == {"a": [5, 4, 3, 2, 1, 0], "b": [5, 4, 3, 2, 1, 0]}
    await ws.close()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("subscription { nope }", "nope"),
        ("{ hello(", "syntax error"),
        ("subscription { countdown }", "from"),
    ],
)
async def test_request_errors_are_error_messages_and_the_socket_stays_up(client, query, expected):
    ws = await ready(client)
    await ws.send_json(subscribe("bad", query))
    message = await recv(ws)
    assert message["type"] == "error" and message["id"] == "bad"
    assert isinstance(message["payload"], list) and message["payload"]
    assert expected in json.dumps(message["payload"])
    await ws.send_json(subscribe("ok", "{ hello }"))
    assert [m["type"] for m in await until_complete(ws, "ok")] == ["next", "complete"]
    await ws.close()


async def test_unknown_operation_name_is_an_error_message(client):
    ws = await ready(client)
    await ws.send_json(subscribe("1", "query A { hello }", operationName="B"))
    message = await recv(ws)
    assert message["type"] == "error"
    assert "unknown operation named 'B'" in message["payload"][0]["message"]
    await ws.close()


async def test_subscription_raising_mid_stream_sends_errors_then_complete(client):
    ws = await ready(client)
    await ws.send_json(subscribe("b", "subscription { boom }"))
    messages = await until_complete(ws, "b")
    assert messages[0] == {"id": "b", "type": "next", "payload": {"data": {"boom": 1}}}
    assert messages[1]["type"] == "next"
    assert messages[1]["payload"]["data"] is None
    assert messages[1]["payload"]["errors"][0]["message"] == "kaboom"
    assert messages[1]["payload"]["errors"][0]["extensions"]["code"] == "BOOM"
    assert messages[2] == {"id": "b", "type": "complete"}
    # The socket is still up for other operations.
    await ws.send_json(subscribe("q", "{ hello }"))
    assert [m["type"] for m in await until_complete(ws, "q")] == ["next", "complete"]
    await ws.close()


async def test_internal_error_mid_stream_is_masked(client, caplog):
    ws = await ready(client)
    await ws.send_json(subscribe("c", "subscription { crash }"))
    messages = await until_complete(ws, "c")
    assert [m["type"] for m in messages] == ["next", "next", "complete"]
    error = messages[1]["payload"]["errors"][0]
    assert error["message"] == "Internal server error"
    assert "secret detail" not in json.dumps(messages)
    assert any("secret detail" in str(r.exc_info) for r in caplog.records if r.exc_info)
    await ws.close()


async def test_client_complete_stops_the_stream(client, probe):
    ws = await ready(client)
    await ws.send_json(subscribe("f", "subscription { forever }"))
    assert (await recv(ws))["payload"] == {"data": {"forever": 0}}
    assert probe.open_streams == 1
    await ws.send_json({"id": "f", "type": "complete"})
    await eventually(lambda: probe.open_streams == 0)
    assert probe.closed_streams == 1
    # Whatever was in flight before the complete has arrived after one
    # ping round trip; after that, nothing more for "f".
    await ws.send_json({"type": "ping"})
    while (message := await recv(ws))["type"] != "pong":
        assert message["id"] == "f" and message["type"] == "next"
    await asyncio.sleep(0.1)
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    # Completing an unknown id is harmless.
    await ws.send_json({"id": "never", "type": "complete"})
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    await ws.close()


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "own-stream"])
async def test_complete_ends_a_stream_that_missed_its_cancellation(make_realtime_app, aiohttp_client, probe, shared):
    data = {**settings(), "graphql": {"share_subscriptions": shared}}
    client = await aiohttp_client(make_realtime_app(data, plugins=[ws_test_plugin(probe)]))
    ws = await ready(client)
    await ws.send_json(subscribe("s", "subscription { stubborn }"))
    assert (await recv(ws))["payload"] == {"data": {"stubborn": 0}}
    await ws.send_json({"id": "s", "type": "complete"})
    # The source swallowed the first cancellation; it is cancelled again.
    await eventually(lambda: probe.open_streams == 0)
    # After the complete and one ping round trip, nothing more for "s",
    # although the source went on for a moment.
    await ws.send_json({"type": "ping"})
    while (message := await recv(ws))["type"] != "pong":
        assert message["id"] == "s" and message["type"] == "next"
    await asyncio.sleep(0.1)
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}
    await ws.close()


async def test_closing_the_socket_stops_every_stream(client, probe):
    ws = await ready(client)
    for n in range(3):
        # Distinct arguments: equal subscriptions would share one source stream.
        await ws.send_json(subscribe(str(n), "subscription($t: String) { idle(tag: $t) }", {"t": str(n)}))
    seen = set()
    while len(seen) < 3:
        seen.add((await recv(ws))["id"])
    assert probe.open_streams == 3
    await ws.close()
    await eventually(lambda: probe.open_streams == 0)
    await eventually(lambda: not client.app[WS_STATE].connections)


async def test_subscriptions_disabled(start):
    client = await start(subscriptions=False)
    ws = await ready(client)
    await ws.send_json(subscribe("s", "subscription { countdown(from: 1) }"))
    message = await recv(ws)
    assert message["type"] == "error" and message["id"] == "s"
    assert "subscriptions are disabled" in message["payload"][0]["message"]
    await ws.send_json(subscribe("q", "{ hello }"))
    assert [m["type"] for m in await until_complete(ws, "q")] == ["next", "complete"]
    await ws.close()


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------


async def test_subscription_limit_per_connection(start, probe):
    client = await start(websocket={"max_subscriptions_per_connection": 2})
    ws = await ready(client)
    for op_id in ("1", "2", "3"):
        # Distinct arguments: equal subscriptions would share one source stream.
        await ws.send_json(subscribe(op_id, "subscription($t: String) { forever(tag: $t) }", {"t": op_id}))
    first: dict[str, dict] = {}
    while len(first) < 3:
        message = await recv(ws)
        first.setdefault(message["id"], message)
    assert first["1"]["type"] == first["2"]["type"] == "next"
    assert first["3"]["type"] == "error"
    assert first["3"]["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
    assert probe.open_streams == 2
    # The socket stays up; completing one makes room.
    await ws.send_json({"id": "1", "type": "complete"})
    await eventually(lambda: probe.open_streams == 1)
    await ws.send_json(subscribe("3", "subscription($t: String) { forever(tag: $t) }", {"t": "3"}))
    while (message := await recv(ws))["id"] != "3":
        pass
    assert message["type"] == "next"
    await ws.close()


async def test_connection_limit_per_ip_closes_4429(start):
    client = await start(websocket={"max_connections_per_ip": 2})
    first = await ready(client)
    second = await ready(client)
    assert client.app[CONNECTION_LIMITER].open("websocket") == {"127.0.0.1": 2}
    third = await connect(client)
    assert await closed_with(third) == (4429, "Too many connections from this address")
    await first.close()
    await eventually(lambda: client.app[CONNECTION_LIMITER].count("websocket", "127.0.0.1") == 1)
    fourth = await ready(client)
    await second.close()
    await fourth.close()
    await eventually(lambda: client.app[CONNECTION_LIMITER].open("websocket") == {})


# ---------------------------------------------------------------------------
# Identity expiry and shutdown
# ---------------------------------------------------------------------------


async def test_expired_identity_closes_4403_mid_stream(client, probe):
    ws = await ready(client, {"authToken": f"dave@{time.time() + 0.5}"})
    await ws.send_json(subscribe("f", "subscription { idle }"))
    assert (await recv(ws))["type"] == "next"
    assert await closed_with(ws) == (4403, "Forbidden: identity expired")
    await eventually(lambda: probe.open_streams == 0)


async def test_already_expired_identity_is_refused_at_init(client):
    ws = await connect(client)
    await ws.send_json({"type": "connection_init", "payload": {"authToken": f"erin@{time.time() - 1}"}})
    assert await closed_with(ws) == (4403, "Forbidden: identity expired")


async def test_shutdown_closes_sockets_1001(make_realtime_app, aiohttp_server, probe):
    server = await aiohttp_server(make_realtime_app(settings(), plugins=[ws_test_plugin(probe)]))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/graphql"), protocols=(TWS,))
        await init(ws)
        await ws.send_json(subscribe("f", "subscription { idle }"))
        assert (await recv(ws))["type"] == "next"
        closing = asyncio.create_task(server.close())
        code, reason = await closed_with(ws)
        await closing
    assert (code, reason) == (1001, "Server shutting down")
    assert probe.open_streams == 0


# ---------------------------------------------------------------------------
# A third-party client: gql's websockets transport
# ---------------------------------------------------------------------------


async def test_gql_websockets_client(client):
    from gql import Client, gql
    from gql.transport.exceptions import TransportQueryError
    from gql.transport.websockets import WebsocketsTransport

    url = str(client.make_url("/graphql")).replace("http://", "ws://")
    transport = WebsocketsTransport(url=url, init_payload={"authToken": "gina"}, subprotocols=[TWS])
    async with Client(transport=transport) as session:
        values = [r async for r in session.subscribe(gql("subscription { countdown(from: 3) }"))]
        assert values == [{"countdown": n} for n in (3, 2, 1, 0)]
        assert await session.execute(gql("{ whoami }")) == {"whoami": "gina"}
        assert await session.execute(gql("mutation { add(a: 1, b: 2) }")) == {"add": 3}
        with pytest.raises(TransportQueryError, match="kaboom"):
            async for _ in session.subscribe(gql("subscription { boom }")):
                pass
    assert transport.subprotocol == TWS


# ---------------------------------------------------------------------------
# Leaks: 1,000 clients that vanish without closing
# ---------------------------------------------------------------------------


class RawWebSocket:
    """A bare client on a socket we control, so it can vanish without a close frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, protocol: str = TWS) -> "RawWebSocket":
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        if len(data) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(data))
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def recv(self) -> dict:
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            data = await self.reader.readexactly(length)
            if first & 0x0F == 0x1:
                return json.loads(data)

    def vanish(self) -> None:
        self.writer.transport.abort()


async def test_no_leaks_after_1000_abrupt_disconnects(client, probe):
    state = client.app[WS_STATE]
    host, port = client.server.host, client.server.port

    async def one(i: int) -> None:
        raw = await RawWebSocket.open(host, port)
        raw.send({"type": "connection_init", "payload": {"authToken": f"u{i}"}})
        assert await raw.recv() == {"type": "connection_ack"}
        raw.send(subscribe("s", "subscription { idle }"))
        assert await raw.recv() == {"id": "s", "type": "next", "payload": {"data": {"idle": 0}}}
        raw.vanish()

    await one(-1)  # warm-up: the engine's caches, aiohttp's first-connection setup
    await eventually(lambda: probe.open_streams == 0 and not state.connections)
    baseline = asyncio.all_tasks()
    for batch in range(20):
        await asyncio.gather(*(one(batch * 50 + i) for i in range(50)))

    def settled() -> bool:
        return not (asyncio.all_tasks() - baseline - {asyncio.current_task()})

    await eventually(settled, timeout=15)
    assert probe.open_streams == 0
    assert probe.closed_streams == 1001
    assert not state.connections
    assert client.app[CONNECTION_LIMITER].open("websocket") == {}
