"""The legacy subscriptions-transport-ws protocol (subprotocol ``graphql-ws``) on a real server.

Same server, test plugin and helpers as ``test_ws.py``; here the messages are
``connection_init``/``connection_ack``/``connection_error``, ``ka``,
``start``/``data``/``error``/``complete``/``stop`` and ``connection_terminate``.
"""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from plugboard.testing import eventually

from test_ws import LEGACY, WS_STATE, closed_with, connect, probe, recv, start  # noqa: F401 (fixtures)


def start_msg(op_id: str, query: str, variables: dict | None = None) -> dict:
    payload: dict = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    return {"id": op_id, "type": "start", "payload": payload}


async def legacy(client, payload: dict | None = None) -> aiohttp.ClientWebSocketResponse:
    ws = await connect(client, protocols=(LEGACY,))
    assert ws.protocol == LEGACY
    await ws.send_json({"type": "connection_init", "payload": payload if payload is not None else {"authToken": "alice"}})
    assert await recv(ws) == {"type": "connection_ack"}
    assert await recv(ws) == {"type": "ka"}
    return ws


async def until_done(ws, op_id: str) -> list[dict]:
    """Messages for ``op_id`` up to its complete or error, skipping keep-alives."""
    out = []
    while True:
        message = await recv(ws)
        if message["type"] == "ka":
            continue
        assert message.get("id") == op_id, message
        out.append(message)
        if message["type"] in ("complete", "error"):
            return out


@pytest.fixture
async def client(start):
    return await start()


async def test_subscription_happy_path(client, probe):
    ws = await legacy(client)
    await ws.send_json(start_msg("1", "subscription($n: Int!) { countdown(from: $n) }", {"n": 2}))
    assert await until_done(ws, "1") == [
        {"id": "1", "type": "data", "payload": {"data": {"countdown": 2}}},
        {"id": "1", "type": "data", "payload": {"data": {"countdown": 1}}},
        {"id": "1", "type": "data", "payload": {"data": {"countdown": 0}}},
        {"id": "1", "type": "complete"},
    ]
    await eventually(lambda: probe.open_streams == 0)
    await ws.close()


async def test_query_and_mutation(client):
    ws = await legacy(client, {"authToken": "hana"})
    await ws.send_json(start_msg("q", "{ whoami hello }"))
    assert await until_done(ws, "q") == [
        {"id": "q", "type": "data", "payload": {"data": {"whoami": "hana", "hello": "hello world"}}},
        {"id": "q", "type": "complete"},
    ]
    await ws.send_json(start_msg("m", "mutation { add(a: 1, b: 1) }"))
    assert (await until_done(ws, "m"))[0]["payload"] == {"data": {"add": 2}}
    await ws.close()


async def test_stop_ends_the_stream_with_complete(client, probe):
    ws = await legacy(client)
    await ws.send_json(start_msg("f", "subscription { forever }"))
    assert (await recv(ws))["type"] == "data"
    await ws.send_json({"id": "f", "type": "stop"})
    while (message := await recv(ws))["type"] != "complete":
        assert message["type"] in ("data", "ka")
    assert message == {"id": "f", "type": "complete"}
    await eventually(lambda: probe.open_streams == 0)
    assert probe.closed_streams == 1
    await ws.close()


async def test_connection_terminate_closes_and_frees(client, probe):
    ws = await legacy(client)
    await ws.send_json(start_msg("f", "subscription { idle }"))
    assert (await recv(ws))["type"] == "data"
    await ws.send_json({"type": "connection_terminate"})
    code, _reason = await closed_with(ws)
    assert code == 1000
    await eventually(lambda: probe.open_streams == 0 and not client.app[WS_STATE].connections)


async def test_reused_id_replaces_the_running_operation(client, probe):
    ws = await legacy(client)
    await ws.send_json(start_msg("1", "subscription { forever }"))
    assert (await recv(ws))["type"] == "data"
    await ws.send_json(start_msg("1", "subscription { countdown(from: 1) }"))
    messages = []
    while not messages or messages[-1]["type"] != "complete":
        message = await recv(ws)
        if message["type"] != "ka":
            messages.append(message)
    counts = [m["payload"]["data"] for m in messages if m["type"] == "data" and "countdown" in m["payload"]["data"]]
    assert counts == [{"countdown": 1}, {"countdown": 0}]
    await eventually(lambda: probe.open_streams == 0)
    await ws.close()


async def test_keepalive_messages(start):
    client = await start(websocket={"keepalive": 0.1})
    ws = await legacy(client)
    began = time.monotonic()
    for _ in range(3):
        assert await recv(ws, timeout=2) == {"type": "ka"}
    assert time.monotonic() - began >= 0.2
    await ws.close()


async def test_start_before_init_is_an_error(client):
    ws = await connect(client, protocols=(LEGACY,))
    await ws.send_json(start_msg("1", "{ hello }"))
    message = await recv(ws)
    assert message["type"] == "error" and message["id"] == "1"
    assert "connection_init" in message["payload"]["message"]
    await ws.close()


@pytest.mark.parametrize("token", ["bad", "banned"])
async def test_auth_refused_is_connection_error_then_4403(client, token):
    ws = await connect(client, protocols=(LEGACY,))
    await ws.send_json({"type": "connection_init", "payload": {"authToken": token}})
    message = await recv(ws)
    assert message["type"] == "connection_error"
    assert message["payload"]["extensions"]["code"] in ("UNAUTHENTICATED", "FORBIDDEN")
    code, reason = await closed_with(ws)
    assert code == 4403 and reason.startswith("Forbidden")


async def test_second_init_is_refused(client):
    ws = await legacy(client)
    await ws.send_json({"type": "connection_init", "payload": {}})
    message = await recv(ws)
    assert message == {"type": "connection_error", "payload": {"message": "Too many initialisation requests"}}
    assert (await closed_with(ws))[0] == 4429


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("nope", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"type": "wat", "id": "7"}', "Invalid message type 'wat'"),
        ('{"type": "start", "payload": {"query": "{ hello }"}}', "non-empty string 'id'"),
        ('{"type": "start", "id": "1", "payload": {"query": 1}}', "'query' string"),
        ('{"type": "stop"}', "non-empty string 'id'"),
    ],
)
async def test_bad_messages_get_error_messages_and_the_socket_stays_up(client, raw, expected):
    ws = await legacy(client)
    await ws.send_str(raw)
    message = await recv(ws)
    assert message["type"] == "error"
    assert expected in message["payload"]["message"]
    await ws.send_json(start_msg("ok", "{ hello }"))
    assert [m["type"] for m in await until_done(ws, "ok")] == ["data", "complete"]
    await ws.close()


async def test_request_error_and_mid_stream_error(client):
    ws = await legacy(client)
    await ws.send_json(start_msg("bad", "subscription { nope }"))
    (message,) = await until_done(ws, "bad")
    assert message["type"] == "error" and "nope" in json.dumps(message["payload"])
    await ws.send_json(start_msg("boom", "subscription { boom }"))
    messages = await until_done(ws, "boom")
    assert [m["type"] for m in messages] == ["data", "data", "complete"]
    assert messages[1]["payload"]["errors"][0]["message"] == "kaboom"
    await ws.close()


async def test_identity_expiry_closes_4403(client, probe):
    ws = await legacy(client, {"authToken": f"ivan@{time.time() + 0.4}"})
    await ws.send_json(start_msg("f", "subscription { idle }"))
    assert await closed_with(ws) == (4403, "Forbidden: identity expired")
    await eventually(lambda: probe.open_streams == 0)


async def test_gql_client_over_the_legacy_protocol(client, probe):
    from gql import Client, gql
    from gql.transport.websockets import WebsocketsTransport

    url = str(client.make_url("/graphql")).replace("http://", "ws://")
    transport = WebsocketsTransport(url=url, init_payload={"authToken": "jo"}, subprotocols=[LEGACY])
    async with Client(transport=transport) as session:
        values = [r async for r in session.subscribe(gql("subscription { countdown(from: 2) }"))]
        assert values == [{"countdown": 2}, {"countdown": 1}, {"countdown": 0}]
        assert await session.execute(gql("{ whoami }")) == {"whoami": "jo"}
        # Leaving a subscription early sends stop; the server answers complete.
        async for value in session.subscribe(gql("subscription { forever }")):
            assert value == {"forever": 0}
            break
    assert transport.subprotocol == LEGACY
    await eventually(lambda: probe.open_streams == 0)
