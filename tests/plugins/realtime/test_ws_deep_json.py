"""Deeply nested JSON on every WebSocket endpoint (issue 9, finding 6).

50,000 ``[`` made json's decoder raise RecursionError inside the message
loop: on ``/graphql`` the handler crashed (logged traceback, no close code);
on the direct channels' ``/ws`` the client got "internal server error". Now
graphql-transport-ws closes with 4400, the legacy protocol and ``/ws``
answer with their error message and stay up, and nothing is logged as a
server error. A server on loopback, as a client would see it.
"""

from __future__ import annotations

import json
import logging

import pytest
from test_channels import settings as channel_settings
from test_channels import ws_next, ws_subscribe
from test_ws import LEGACY, closed_with, connect, probe, ready, recv, start  # noqa: F401 (fixtures)
from test_ws_legacy import legacy, start_msg, until_done

from plugboard.plugins.realtime.ws_messages import MAX_MESSAGE_DEPTH, loads


def nested(depth: int) -> str:
    """``{"a":{"a":...1...}}``, ``depth`` objects deep."""
    return '{"a":' * depth + "1" + "}" * depth


def deep_messages() -> list[tuple[str, str]]:
    deep_variables = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }", "variables": {}}})
    deep_variables = deep_variables.replace('"variables": {}', f'"variables": {{"v": {nested(600)}}}')
    return [
        ("brackets", "[" * 50_000),
        ("braces", '{"a":' * 12_000),
        ("deep-variables", deep_variables),
    ]


@pytest.fixture
def no_server_errors(caplog):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_loads_bounds_the_depth_without_recursing():
    assert loads(nested(MAX_MESSAGE_DEPTH - 1)) == json.loads(nested(MAX_MESSAGE_DEPTH - 1))
    # Many brackets, little depth: walked, accepted.
    assert loads(json.dumps([[1]] * 500)) == [[1]] * 500
    assert loads('{"q": "' + "{" * 200 + '"}') == {"q": "{" * 200}
    for text in ("[" * 50_000, "[" * 50_000 + "]" * 50_000, nested(MAX_MESSAGE_DEPTH + 1), nested(900)):
        with pytest.raises(ValueError, match="nested more than 64 levels deep"):
            loads(text)


@pytest.mark.parametrize("name, text", deep_messages(), ids=lambda v: v if len(v) < 20 else "")
async def test_graphql_transport_ws_closes_4400(start, name, text, no_server_errors):
    client = await start()
    ws = await ready(client)
    await ws.send_str(text)
    code, reason = await closed_with(ws)
    assert code == 4400, (code, reason)
    assert "nested more than 64 levels deep" in reason or "not valid JSON" in reason
    # The server is fine: a new connection works.
    ws = await ready(client)
    await ws.send_json({"id": "ok", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert (await recv(ws))["payload"] == {"data": {"hello": "hello world"}}
    await ws.close()


async def test_graphql_transport_ws_before_init_closes_4400(start, no_server_errors):
    client = await start()
    ws = await connect(client)
    await ws.send_str("[" * 50_000)
    code, reason = await closed_with(ws)
    assert code == 4400 and "nested more than 64 levels deep" in reason


@pytest.mark.parametrize("name, text", deep_messages(), ids=lambda v: v if len(v) < 20 else "")
async def test_legacy_protocol_answers_an_error_and_stays_up(start, name, text, no_server_errors):
    client = await start()
    ws = await legacy(client)
    await ws.send_str(text)
    message = await recv(ws)
    assert message["type"] == "error", message
    assert "nested more than 64 levels deep" in message["payload"]["message"] or "not valid JSON" in message["payload"]["message"]
    await ws.send_json(start_msg("ok", "{ hello }"))
    assert [m["type"] for m in await until_done(ws, "ok")] == ["data", "complete"]
    await ws.close()


async def test_direct_channels_answer_an_error_and_stay_up(make_realtime_app, aiohttp_client, no_server_errors):
    client = await aiohttp_client(make_realtime_app(channel_settings()))
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.deep")
        for text in ("[" * 50_000, '{"a":' * 12_000, '{"type": "ping", "x": ' + nested(600) + "}"):
            await ws.send_str(text)
            reply = await ws_next(ws)
            assert reply["type"] == "error" and reply["message"].startswith("invalid JSON"), reply
        await ws.send_json({"type": "ping"})
        assert await ws_next(ws) == {"type": "pong"}
