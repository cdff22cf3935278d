"""GraphQL clients for tests: HTTP (:func:`gql`), WebSocket (both subprotocols), SSE, in-process
(:func:`subscribe`), and :func:`eventually`.

Each works with anything that speaks aiohttp's client API on paths: the
kit's :class:`PlugboardTestClient` (an ``aiohttp.test_utils.TestClient``), or
an ``aiohttp.ClientSession(base_url=server.url)`` pointed at a
``plugboard serve`` subprocess. They read the protocols strictly (a message of
the wrong kind fails the test with what came instead) but add nothing of their
own, so a test still sees every message, status and header.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import aiohttp
from aiohttp.test_utils import TestClient

__all__ = [
    "gql",
    "gql_data",
    "subscribe",
    "eventually",
    "PlugboardTestClient",
    "TransportWS",
    "LegacyWS",
    "EventStream",
    "GRAPHQL_TRANSPORT_WS",
    "SUBSCRIPTIONS_TRANSPORT_WS",
]

#: The graphql-ws library's protocol (``subscribe``/``next``/``complete``).
GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
#: The legacy subscriptions-transport-ws protocol (its subprotocol name is ``graphql-ws``).
SUBSCRIPTIONS_TRANSPORT_WS = "graphql-ws"
GRAPHQL_PATH = "/graphql"

T = TypeVar("T")


def _bearer(headers: Mapping[str, str] | None, token: str | None) -> dict[str, str]:
    out = dict(headers or {})
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    return out


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


async def gql(
    http: Any,
    query: str,
    variables: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    operation_name: str | None = None,
    path: str = GRAPHQL_PATH,
    status: int | None = 200,
) -> dict[str, Any]:
    """POST one GraphQL operation; the response's JSON (``data`` and/or ``errors``).

    :param http: a TestClient, or a ClientSession with a ``base_url``.
    :param token: sent as ``Authorization: Bearer <token>``.
    :param status: the HTTP status to insist on (None: any).
    """
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    if operation_name is not None:
        body["operationName"] = operation_name
    async with http.post(path, json=body, headers=_bearer(headers, token)) as resp:
        text = await resp.text()
        if status is not None:
            assert resp.status == status, f"HTTP {resp.status} (expected {status}): {text}"
        return json.loads(text)


async def gql_data(http: Any, query: str, variables: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """As :func:`gql`, but fails on any GraphQL error and returns ``data``."""
    result = await gql(http, query, variables, **kwargs)
    assert "errors" not in result, result
    return result["data"]


# ---------------------------------------------------------------------------
# In-process: the app's operation runner without a transport
# ---------------------------------------------------------------------------


async def subscribe(
    app: Any,
    query: str,
    variables: Mapping[str, Any] | None = None,
    *,
    connection_params: Mapping[str, Any] | None = None,
) -> Any:
    """Start a subscription on a started app as the WebSocket transport would; its result stream.

    No socket involved: the context is built by the app's context hooks from
    ``connection_params`` (what a client's ``connection_init`` carries), and
    the operation goes through the app's runner (steps included). Iterate the
    stream for results (``await anext(stream)``) and ``await stream.aclose()``
    when done; errors before the first result (validation, authorisation) are
    raised by the first ``anext``.
    """
    from plugboard import keys
    from plugboard.graphql.operation import Operation

    context = await app[keys.CONTEXT_BUILDER].build(
        app, None, request_id="test", transport="ws", connection_params=dict(connection_params) if connection_params else None
    )
    op = Operation(query=query, variables=variables, operation_name=None, extensions=None, context=context, transport="ws")
    runner = app[keys.RUNNER]
    runner.prepare(op, allowed_types=("query", "mutation", "subscription"))
    return await runner.subscribe(op)


# ---------------------------------------------------------------------------
# Polling
# ---------------------------------------------------------------------------


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    what: str | None = None,
) -> T:
    """Poll ``predicate()`` (sync or async) until it is truthy; returns that value.

    Fails with AssertionError after ``timeout`` seconds, naming ``what`` (or
    the predicate's docstring). Prefer awaiting the event itself where the code
    under test offers one; this is for state another task or process changes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s: {what or predicate.__doc__ or predicate}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# WebSocket: graphql-transport-ws and the legacy subscriptions-transport-ws
# ---------------------------------------------------------------------------


class _GraphQLWS:
    """What both subprotocols share; subclasses name their message types."""

    protocol: str
    #: The client's "run this operation" and the server's result message types.
    start_type: str
    data_type: str

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        #: The underlying aiohttp WebSocket, for frames the helpers do not cover.
        self.ws = ws

    @classmethod
    async def connect(
        cls,
        http: Any,
        payload: Mapping[str, Any] | None = None,
        *,
        path: str = GRAPHQL_PATH,
        init: bool = True,
        **ws_kwargs: Any,
    ):
        """Open the socket with this subprotocol; with ``init``, send ``connection_init`` and expect the ack."""
        ws = await http.ws_connect(path, protocols=(cls.protocol,), **ws_kwargs)
        client = cls(ws)
        assert ws.protocol == cls.protocol, f"server chose subprotocol {ws.protocol!r}, not {cls.protocol!r}"
        if init:
            await client.init(payload)
        return client

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send_json(message)

    async def receive(self, timeout: float | None = 5.0) -> dict[str, Any]:
        """The next message (a text frame, decoded), whatever it is; anything but text fails the test."""
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text message, got {msg}"
        return json.loads(msg.data)

    async def _control(self, message: dict[str, Any]) -> bool:
        """Handle a keep-alive; True if ``message`` was one."""
        return False

    async def receive_message(self, timeout: float | None = 5.0) -> dict[str, Any]:
        """The next message that is not a keep-alive (those are answered or skipped)."""
        while True:
            message = await self.receive(timeout)
            if not await self._control(message):
                return message

    async def init(self, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``connection_init``; returns the ``connection_ack``."""
        await self.send({"type": "connection_init", "payload": dict(payload or {})})
        ack = await self.receive()
        assert ack.get("type") == "connection_ack", ack
        return ack

    async def _start(self, op_id: str, query: str, variables: Mapping[str, Any] | None, payload: dict[str, Any]) -> None:
        body: dict[str, Any] = {"query": query, **payload}
        if variables is not None:
            body["variables"] = variables
        await self.send({"id": op_id, "type": self.start_type, "payload": body})

    async def until_complete(self, op_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every message up to and including ``op_id``'s ``complete`` or ``error``.

        Keep-alives are handled; a message for another operation fails the test.
        """
        out = []
        while True:
            message = await self.receive_message(timeout)
            assert message.get("id") == op_id, message
            out.append(message)
            if message["type"] in ("complete", "error"):
                return out

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None, *, op_id: str = "1") -> list[dict[str, Any]]:
        """Run one operation to its end; the result payloads (an ``error`` fails the test)."""
        await self._start(op_id, query, variables, {})
        messages = await self.until_complete(op_id)
        assert messages[-1]["type"] == "complete", messages
        assert all(m["type"] == self.data_type for m in messages[:-1]), messages
        return [m["payload"] for m in messages[:-1]]

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the server closes the socket; its close code and reason."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    continue
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return msg.data, msg.extra or ""
                if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return self.ws.close_code, ""
                raise AssertionError(f"expected a close frame, got {msg}")

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class TransportWS(_GraphQLWS):
    """A graphql-transport-ws client (the graphql-ws library's protocol); pings are answered::

        async with await TransportWS.connect(client, {"authToken": "alice"}) as ws:
            assert await ws.execute("{ hello }") == [{"data": {"hello": "world"}}]
            await ws.subscribe("2", "subscription { tick }")
            assert (await ws.receive_message())["type"] == "next"
    """

    protocol = GRAPHQL_TRANSPORT_WS
    start_type = "subscribe"
    data_type = "next"

    async def _control(self, message: dict[str, Any]) -> bool:
        if message.get("type") == "ping":
            await self.send({"type": "pong"})
            return True
        return message.get("type") == "pong"

    async def subscribe(self, op_id: str, query: str, variables: Mapping[str, Any] | None = None, **payload: Any) -> None:
        """Send ``subscribe`` (any operation type); ``payload`` adds e.g. ``extensions``."""
        await self._start(op_id, query, variables, payload)

    async def complete(self, op_id: str) -> None:
        """The client's ``complete``: stop that operation."""
        await self.send({"id": op_id, "type": "complete"})


class LegacyWS(_GraphQLWS):
    """A subscriptions-transport-ws client (subprotocol ``graphql-ws``); keep-alives (``ka``) are skipped."""

    protocol = SUBSCRIPTIONS_TRANSPORT_WS
    start_type = "start"
    data_type = "data"

    async def _control(self, message: dict[str, Any]) -> bool:
        return message.get("type") == "ka"

    async def start(self, op_id: str, query: str, variables: Mapping[str, Any] | None = None, **payload: Any) -> None:
        """Send ``start`` for any operation type."""
        await self._start(op_id, query, variables, payload)

    async def stop(self, op_id: str) -> None:
        """The client's ``stop``: end that operation."""
        await self.send({"id": op_id, "type": "stop"})


# ---------------------------------------------------------------------------
# Server-sent events
# ---------------------------------------------------------------------------


class EventStream:
    """Reads a ``text/event-stream`` response body event by event.

    Parses the wire format itself (fields, multi-line data, comments), so a
    test checks the bytes the server sent, not a library's reading of them.
    """

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        #: Comment lines seen so far (keep-alives), with their ``:``.
        self.comments: list[str] = []
        #: The ``id:`` of the last event read, if any.
        self.last_id: str | None = None

    @classmethod
    async def subscribe(
        cls,
        http: Any,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        path: str = GRAPHQL_PATH,
    ) -> "EventStream":
        """POST an operation in distinct connections mode; the stream (status 200 checked)."""
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        hdrs = {"Accept": "text/event-stream", **_bearer(headers, token)}
        resp = await http.post(path, json=body, headers=hdrs)
        if resp.status != 200:
            text = await resp.text()
            resp.release()
            raise AssertionError(f"HTTP {resp.status}: {text}")
        assert resp.content_type == "text/event-stream", resp.content_type
        return cls(resp)

    async def event(self, timeout: float | None = 5.0) -> tuple[str, str]:
        """The next event as ``(event name, data)``; EOFError when the stream ends."""
        event: str | None = None
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if event is None and not data:
                        continue  # the blank line after a comment
                    return event or "message", "\n".join(data)
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    self.last_id = value

    async def until_complete(self, timeout: float = 5.0) -> list[tuple[str, Any]]:
        """Distinct mode: every event up to and including ``complete``; ``next`` data parsed."""
        events = []
        while True:
            name, data = await self.event(timeout)
            events.append((name, json.loads(data) if name == "next" else data))
            if name == "complete":
                return events

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next ``next`` event's payload; any other event fails the test."""
        name, data = await self.event(timeout)
        assert name == "next", (name, data)
        return json.loads(data)

    async def ended(self, timeout: float = 5.0) -> bool:
        """True if the server ends the stream before another event arrives."""
        try:
            await self.event(timeout)
        except EOFError:
            return True
        return False

    def close(self) -> None:
        """Drop the connection (the server sees the client go)."""
        self.resp.close()

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# The test client the kit's fixture hands out
# ---------------------------------------------------------------------------


class PlugboardTestClient(TestClient):
    """aiohttp's TestClient plus the GraphQL helpers above as methods.

    ``client.app`` is the application; ``client.post``/``get``/``ws_connect``
    work as always.
    """

    async def gql(self, query: str, variables: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """See :func:`gql`: the response JSON."""
        return await gql(self, query, variables, **kwargs)

    async def gql_data(self, query: str, variables: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """See :func:`gql_data`: ``data``, failing on any error."""
        return await gql_data(self, query, variables, **kwargs)

    async def ws(self, payload: Mapping[str, Any] | None = None, *, legacy: bool = False, **kwargs: Any) -> TransportWS | LegacyWS:
        """A connected, initialised WebSocket client (graphql-transport-ws, or legacy)."""
        cls = LegacyWS if legacy else TransportWS
        return await cls.connect(self, payload, **kwargs)

    async def sse(self, query: str, variables: Mapping[str, Any] | None = None, **kwargs: Any) -> EventStream:
        """A distinct-connections SSE subscription; see :meth:`EventStream.subscribe`."""
        return await EventStream.subscribe(self, query, variables, **kwargs)
