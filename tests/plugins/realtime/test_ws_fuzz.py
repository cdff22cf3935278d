"""Fuzzing the WebSocket endpoints like an attacker: no crashed handler, no server error.

Hypothesis sends arbitrary text, arbitrary JSON, deep nesting and messages
shaped like each protocol's (with wrong types, ids and payloads) to
``/graphql`` over graphql-transport-ws and the legacy graphql-ws, and to the
direct channels' ``/ws``. After each, the connection either still answers
(a ``pong``, or a probe operation's result) or was closed with one of the
protocol's own codes; nothing is logged at ERROR. The server runs on
loopback in a thread of its own (hypothesis drives a synchronous test);
bounded to a few hundred examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from plugboard.app import create_app  # noqa: E402
from plugboard.settings import Settings  # noqa: E402

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
#: Closes a fuzzed client may get: the protocols' own, never 1011 or 4500.
PROTOCOL_CLOSES = {1000, 1009, 4400, 4401, 4403, 4408, 4409, 4429}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
queries = st.sampled_from(["{ __typename }", "subscription { nope }", "{", "query Q($a: Int) { __typename }", ""]) | st.text(max_size=40)


def shaped(types: list[str]) -> st.SearchStrategy[str]:
    """Messages that look like a protocol's, with anything in their fields."""
    payload = json_values | st.fixed_dictionaries(
        {"query": queries},
        optional={"variables": json_values, "operationName": json_values, "extensions": json_values},
    )
    message = st.fixed_dictionaries(
        {"type": st.sampled_from(types) | json_values},
        optional={"id": st.text(max_size=10) | json_values, "payload": payload, "topic": st.text(max_size=12) | json_values,
                  "data": json_values, "token": json_values, "lastEventId": st.text(max_size=12) | json_values},
    )
    return message.map(json.dumps)


def hostile(types: list[str]) -> st.SearchStrategy[str]:
    deep = st.tuples(st.sampled_from(["[", '{"a":', '{"type":"ping","x":[']), st.integers(1, 3000)).map(lambda t: t[0] * t[1])
    return st.one_of(shaped(types), json_values.map(json.dumps), st.text(max_size=200), deep)


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ThreadedServer:
    """An app on loopback in its own event loop thread; :meth:`run` runs a coroutine there."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app)
        self.session: aiohttp.ClientSession | None = None
        self.port = self.run(self._start())

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.session = aiohttp.ClientSession()
        return self.runner.addresses[0][1]

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def stop() -> None:
            assert self.session is not None
            await self.session.close()
            await self.runner.cleanup()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def settled(self) -> None:
        """Until every connection is gone on the server's side too: a handler's
        crash is logged only after the client saw its socket close."""
        server = self.runner.server
        async with asyncio.timeout(5):
            while server is not None and server.connections:
                await asyncio.sleep(0.005)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wsfuzz")
    data = {
        "plugins": ["realtime"],
        "server": {"data_dir": str(tmp / "var")},
        "realtime": {"features": {"presence": False, "chat": False, "notifications": False}, "websocket": {"init_timeout": "30s"}},
    }
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    srv = ThreadedServer(create_app(Settings.from_mapping(data, root=tmp)))
    srv.errors = errors  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.close()
        logging.getLogger().removeHandler(errors)


async def _until(ws: aiohttp.ClientWebSocketResponse, done) -> int | None:
    """Read until ``done(message)`` (None: still open) or a close (its code)."""
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                if done(json.loads(msg.data)):
                    return None
                continue
            if msg.type == WSMsgType.CLOSE:
                return msg.data
            if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                return ws.close_code


async def _transport_ws(server: ThreadedServer, text: str) -> int | None:
    async with server.session.ws_connect(server.url("/graphql"), protocols=("graphql-transport-ws",)) as ws:
        await ws.send_json({"type": "connection_init"})
        assert json.loads((await ws.receive(timeout=5)).data) == {"type": "connection_ack"}
        await ws.send_str(text)
        await ws.send_json({"type": "ping", "payload": {"probe": True}})
        return await _until(ws, lambda m: m == {"type": "pong", "payload": {"probe": True}})


async def _legacy(server: ThreadedServer, text: str) -> int | None:
    async with server.session.ws_connect(server.url("/graphql"), protocols=("graphql-ws",)) as ws:
        await ws.send_json({"type": "connection_init"})
        assert json.loads((await ws.receive(timeout=5)).data) == {"type": "connection_ack"}
        await ws.send_str(text)
        await ws.send_json({"id": "probe-op", "type": "start", "payload": {"query": "{ __typename }"}})
        return await _until(ws, lambda m: m.get("id") == "probe-op" and m.get("type") == "complete")


async def _channels(server: ThreadedServer, text: str) -> int | None:
    async with server.session.ws_connect(server.url("/ws")) as ws:
        await ws.send_str(text)
        await ws.send_json({"type": "ping"})
        return await _until(ws, lambda m: m == {"type": "pong"})


def _check(server: ThreadedServer, code: int | None, text: str) -> None:
    server.run(server.settled())
    assert code is None or code in PROTOCOL_CLOSES, (code, text[:200])
    records = server.errors.records  # type: ignore[attr-defined]
    # Cleared each time: a failure names the example that caused it.
    errors, records[:] = list(records), []
    assert not errors, [r.getMessage() for r in errors][:3]


TRANSPORT_TYPES = ["connection_init", "ping", "pong", "subscribe", "next", "error", "complete", "connection_ack"]
LEGACY_TYPES = ["connection_init", "start", "stop", "connection_terminate", "data", "ka"]
CHANNEL_TYPES = ["auth", "subscribe", "unsubscribe", "publish", "ping"]


@FUZZ
@given(text=hostile(TRANSPORT_TYPES))
def test_graphql_transport_ws(server, text):
    _check(server, server.run(_transport_ws(server, text)), text)


@FUZZ
@given(text=hostile(LEGACY_TYPES))
def test_legacy_graphql_ws(server, text):
    code = server.run(_legacy(server, text))
    _check(server, code, text)


@FUZZ
@given(text=hostile(CHANNEL_TYPES))
def test_direct_channels_ws(server, text):
    _check(server, server.run(_channels(server, text)), text)
