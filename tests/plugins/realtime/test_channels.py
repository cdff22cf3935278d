"""Direct channels: ``GET /events`` (SSE) and ``/ws`` (JSON WebSocket) with replay from history.

Real servers on loopback; the Redis variants use the session's real
redis-server (``redis_url``). Identity comes from the ``pb_token_auth`` stand-in
(``Authorization: Bearer <user>`` / ``{"type": "auth", "token": "<user>"}``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
import types
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import WSMsgType, web

from plugboard import hookimpl, keys
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.channels import CHANNELS, publish_event
from plugboard.plugins.realtime.limiter import CONNECTION_LIMITER
from plugboard.plugins.realtime.history import MemoryHistory, RedisHistory, parse_event_id
from plugboard.testing import EventStream, eventually

ID = re.compile(r"^\d+-\d+$")
QUIET = {"presence": False, "chat": False, "notifications": False}


def settings(realtime: dict | None = None, redis_url: str | None = None) -> dict:
    section: dict[str, Any] = {"features": dict(QUIET)}
    section.update(realtime or {})
    data: dict[str, Any] = {"realtime": section}
    if redis_url is not None:
        data["redis"] = {"url": redis_url}
        data["services"] = {"pubsub": {"provider": "redis"}}
    return data


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    """``backend(realtime_section)`` -> settings for the memory or the Redis variant."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def make(realtime: dict | None = None) -> dict:
        return settings(realtime, redis_url)

    make.name = request.param
    make.redis_url = redis_url
    return make


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


def authz_plugin(name: str, decide) -> types.SimpleNamespace:
    """A plugin implementing plugboard_channel_authorize with ``decide(context, topic, action)``."""
    plugin = types.SimpleNamespace(plugboard_name=name, __name__=name, calls=[])

    async def plugboard_channel_authorize(context, topic, action):
        plugin.calls.append((topic, action))
        return decide(context, topic, action)

    plugin.plugboard_channel_authorize = hookimpl(plugboard_channel_authorize)
    return plugin


async def read_event(resp: aiohttp.ClientResponse, timeout: float = 5.0) -> dict[str, Any]:
    """The next SSE event (comments skipped) as ``{"id", "event", "data"}`` with data decoded."""
    stream = EventStream(resp)
    name, data = await stream.event(timeout)
    return {"id": stream.last_id, "event": name, "data": json.loads(data)}


async def no_event(resp: aiohttp.ClientResponse, wait: float = 0.3) -> None:
    try:
        event = await read_event(resp, timeout=wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected event {event}")


async def ws_next(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return json.loads(msg.data)


async def ws_subscribe(ws: aiohttp.ClientWebSocketResponse, topic: str, last_event_id: str | None = None) -> None:
    message: dict[str, Any] = {"type": "subscribe", "topic": topic}
    if last_event_id is not None:
        message["lastEventId"] = last_event_id
    await ws.send_json(message)
    assert await ws_next(ws) == {"type": "subscribed", "topic": topic}


async def ws_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; return (close code, reason)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code, ""


def key(event_id: str) -> tuple[int, int]:
    return parse_event_id(event_id)


# ---------------------------------------------------------------------------
# Live delivery
# ---------------------------------------------------------------------------


async def test_sse_delivers_live_events_with_ids(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend())
    client = await aiohttp_client(app)
    resp = await client.get("/events?topic=public.a&topic=public.b")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["X-Request-ID"]
    ids = [
        await publish_event(app, "public.a", {"n": 1}),
        await publish_event(app, "public.b", {"n": 2}),
        await publish_event(app, "public.c", {"n": 99}),  # not subscribed
        await publish_event(app, "public.a", ["x", None, 3.5]),
    ]
    assert all(ID.match(i) for i in ids)
    assert [key(i) for i in ids] == sorted(key(i) for i in ids) and len(set(ids)) == 4
    got = [await read_event(resp) for _ in range(3)]
    assert got == [
        {"id": ids[0], "event": "public.a", "data": {"n": 1}},
        {"id": ids[1], "event": "public.b", "data": {"n": 2}},
        {"id": ids[3], "event": "public.a", "data": ["x", None, 3.5]},
    ]
    await no_event(resp)
    resp.close()


async def test_ws_delivers_live_events_and_publishes(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend())
    client = await aiohttp_client(app)
    # Anonymous clients only read (realtime.channels.publish: signed_in): the sender signs in.
    async with client.ws_connect("/ws") as listener, client.ws_connect("/ws", headers=bearer("bob")) as sender:
        await ws_subscribe(listener, "public.room")
        await sender.send_json({"type": "publish", "topic": "public.room", "data": {"text": "hi"}})
        ack = await ws_next(sender)
        assert ack["type"] == "published" and ack["topic"] == "public.room" and ID.match(ack["id"])
        assert await ws_next(listener) == {"type": "event", "topic": "public.room", "id": ack["id"], "data": {"text": "hi"}}
        from_server = await publish_event(app, "public.room", 7)
        assert await ws_next(listener) == {"type": "event", "topic": "public.room", "id": from_server, "data": 7}
        await listener.send_json({"type": "ping"})
        assert await ws_next(listener) == {"type": "pong"}
        await listener.send_json({"type": "unsubscribe", "topic": "public.room"})
        assert await ws_next(listener) == {"type": "unsubscribed", "topic": "public.room"}
        await publish_event(app, "public.room", "after unsubscribe")
        await listener.send_json({"type": "ping"})
        # Nothing for the dropped topic comes before the pong.
        assert await ws_next(listener) == {"type": "pong"}


async def test_sse_sends_keepalive_comments(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings({"sse": {"keepalive": "200ms"}})))
    resp = await client.get("/events?topic=public.quiet")
    started = time.monotonic()
    async with asyncio.timeout(3):
        line = await resp.content.readline()
    assert line.startswith(b":"), line
    assert 0.1 < time.monotonic() - started < 2.5
    resp.close()


# ---------------------------------------------------------------------------
# Authorization
# ---------------------------------------------------------------------------


async def test_default_rule_public_open_user_topic_only_for_that_user(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))

    async def status(query: str, user: str | None = None) -> tuple[int, dict | None]:
        resp = await client.get(f"/events?{query}", headers=bearer(user) if user else None)
        body = await resp.json() if resp.status != 200 else None
        resp.close()
        return resp.status, body

    assert (await status("topic=public.news"))[0] == 200
    assert (await status("topic=user.alice", "alice"))[0] == 200
    code, body = await status("topic=user.alice")
    assert code == 403 and body["code"] == "FORBIDDEN" and body["topic"] == "user.alice"
    assert "user.alice" in body["error"]
    code, body = await status("topic=public.news&topic=user.bob", "alice")
    assert code == 403 and body["topic"] == "user.bob"
    assert (await status("topic=private.x", "alice"))[0] == 403
    # "user.alice.extra" is not alice's own topic.
    assert (await status("topic=user.alice.extra", "alice"))[0] == 403

    async with client.ws_connect("/ws", headers=bearer("alice")) as ws:
        await ws_subscribe(ws, "user.alice")
        await ws.send_json({"type": "subscribe", "topic": "user.bob"})
        assert await ws_next(ws) == {"type": "error", "message": "not allowed to subscribe to topic 'user.bob'", "topic": "user.bob"}
        await ws.send_json({"type": "publish", "topic": "user.bob", "data": 1})
        assert await ws_next(ws) == {"type": "error", "message": "not allowed to publish to topic 'user.bob'", "topic": "user.bob"}
        await ws.send_json({"type": "publish", "topic": "user.alice", "data": 1})
        # Its own event and the ack, in either order.
        assert {(await ws_next(ws))["type"], (await ws_next(ws))["type"]} == {"published", "event"}


async def test_authorization_hook_decides_in_plugin_order(make_realtime_app, aiohttp_client):
    def first(context, topic, action):
        if topic == "order.x":
            return False
        if topic == "team.boom":
            raise GraphQLError("the team service says no", "FORBIDDEN")
        if topic == "team.crash":
            raise RuntimeError("a bug in the plugin")
        if topic.startswith("team.") and action == "publish":
            return False
        if topic == "public.secret":
            return False
        return None

    def second(context, topic, action):
        if topic == "order.x":
            return True
        if topic == "team.red":
            return context.identity == "alice"
        return None

    p1, p2 = authz_plugin("authz_first", first), authz_plugin("authz_second", second)
    client = await aiohttp_client(make_realtime_app(settings(), plugins=[p1, p2]))

    async def status(topic: str, user: str | None = None) -> tuple[int, dict | None]:
        resp = await client.get(f"/events?topic={topic}", headers=bearer(user) if user else None)
        body = await resp.json() if resp.status != 200 else None
        resp.close()
        return resp.status, body

    assert (await status("team.red", "alice"))[0] == 200
    assert (await status("team.red", "bob"))[0] == 403
    # The first plugin's False wins over the second plugin's True: plugin order.
    assert (await status("order.x", "alice"))[0] == 403
    # A False from a plugin beats the default rule; None leaves it to the rule.
    assert (await status("public.secret"))[0] == 403
    assert (await status("public.news"))[0] == 200
    code, body = await status("team.boom", "alice")
    assert code == 403 and body == {"error": "the team service says no", "code": "FORBIDDEN", "topic": "team.boom"}
    assert ("order.x", "subscribe") in p1.calls and ("order.x", "subscribe") not in p2.calls
    code, body = await status("team.crash", "alice")
    assert code == 500 and body == {"error": "internal server error", "code": "INTERNAL_SERVER_ERROR", "topic": "team.crash"}

    async with client.ws_connect("/ws", headers=bearer("alice")) as ws:
        await ws_subscribe(ws, "team.red")
        await ws.send_json({"type": "publish", "topic": "team.red", "data": {}})
        assert await ws_next(ws) == {"type": "error", "message": "not allowed to publish to topic 'team.red'", "topic": "team.red"}
        assert ("team.red", "publish") in p1.calls
        await ws.send_json({"type": "subscribe", "topic": "team.boom"})
        assert await ws_next(ws) == {"type": "error", "message": "the team service says no", "topic": "team.boom"}
        await ws.send_json({"type": "subscribe", "topic": "team.crash"})
        assert await ws_next(ws) == {"type": "error", "message": "internal server error", "topic": "team.crash"}
        await ws.send_json({"type": "ping"})
        assert await ws_next(ws) == {"type": "pong"}


# ---------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------


async def test_sse_replays_after_a_dropped_connection(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend())
    client = await aiohttp_client(app)
    resp = await client.get("/events?topic=public.r&topic=public.s")
    first = await publish_event(app, "public.r", 1)
    assert (await read_event(resp))["id"] == first
    resp.close()  # the connection drops

    missed = [
        await publish_event(app, "public.r", 2),
        await publish_event(app, "public.other", "not for us"),
        await publish_event(app, "public.s", 3),
        await publish_event(app, "public.r", 4),
    ]
    resp = await client.get("/events?topic=public.r&topic=public.s", headers={"Last-Event-ID": first})
    assert resp.status == 200
    replayed = [await read_event(resp) for _ in range(3)]
    assert [(e["id"], e["event"], e["data"]) for e in replayed] == [
        (missed[0], "public.r", 2),
        (missed[2], "public.s", 3),
        (missed[3], "public.r", 4),
    ]
    live = await publish_event(app, "public.s", 5)
    assert await read_event(resp) == {"id": live, "event": "public.s", "data": 5}
    await no_event(resp)
    resp.close()

    # lastEventId in the URL works too; the header wins when both are sent
    # (EventSource reconnects to the same URL, adding a newer header).
    resp = await client.get(f"/events?topic=public.r&lastEventId={missed[0]}")
    assert [(await read_event(resp))["id"] for _ in range(1)] == [missed[3]]
    resp.close()
    resp = await client.get(f"/events?topic=public.r&lastEventId={first}", headers={"Last-Event-ID": missed[0]})
    assert (await read_event(resp))["id"] == missed[3]
    await no_event(resp)
    resp.close()


async def test_ws_subscribe_with_last_event_id_replays_then_goes_live(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend())
    client = await aiohttp_client(app)
    seen = await publish_event(app, "public.w", "seen")
    missed = [await publish_event(app, "public.w", n) for n in range(3)]
    await publish_event(app, "public.elsewhere", "x")
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.w", last_event_id=seen)
        for n, event_id in enumerate(missed):
            assert await ws_next(ws) == {"type": "event", "topic": "public.w", "id": event_id, "data": n}
        live = await publish_event(app, "public.w", "live")
        assert await ws_next(ws) == {"type": "event", "topic": "public.w", "id": live, "data": "live"}


async def test_reconnect_during_publishing_has_no_gaps_or_duplicates(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend())
    client = await aiohttp_client(app)
    total = 150
    topics = ("public.g1", "public.g2")

    async def publisher() -> None:
        for n in range(total):
            await publish_event(app, topics[n % 2], n)
            await asyncio.sleep(0.002)

    received: list[int] = []
    ids: list[str] = []
    resp = await client.get("/events?topic=public.g1&topic=public.g2")
    task = asyncio.create_task(publisher())
    try:
        for _ in range(40):
            event = await read_event(resp)
            received.append(event["data"])
            ids.append(event["id"])
        resp.close()
        # Reconnect while the publisher keeps going: the history read and the
        # live subscription overlap, and the handover must neither lose nor repeat.
        await asyncio.sleep(0.03)
        resp = await client.get("/events?topic=public.g1&topic=public.g2", headers={"Last-Event-ID": ids[-1]})
        while received[-1] != total - 1:
            event = await read_event(resp)
            received.append(event["data"])
            ids.append(event["id"])
        await no_event(resp, 0.2)
        resp.close()
    finally:
        await task
    assert received == list(range(total))
    assert [key(i) for i in ids] == sorted(key(i) for i in ids) and len(set(ids)) == total


async def test_replay_from_another_instance_after_a_restart(make_realtime_app, aiohttp_server, redis_url):
    """Behind a load balancer: app A stops; the client reconnects to app B and catches up."""
    app_a = make_realtime_app(settings(redis_url=redis_url))
    app_b = make_realtime_app(settings(redis_url=redis_url))
    server_a = await aiohttp_server(app_a)
    server_b = await aiohttp_server(app_b)
    async with aiohttp.ClientSession() as session:
        # Live across instances: subscribed on B, published on A.
        resp = await session.get(server_b.make_url("/events?topic=public.lb"))
        first = await publish_event(app_a, "public.lb", "from A")
        assert await read_event(resp) == {"id": first, "event": "public.lb", "data": "from A"}
        resp.close()

        missed = [await publish_event(app_a, "public.lb", n) for n in range(3)]
        missed.append(await publish_event(app_b, "public.lb", "from B"))
        # Ids from both instances are one sequence.
        assert [key(i) for i in [first, *missed]] == sorted(key(i) for i in [first, *missed])
        await server_a.close()

        resp = await session.get(server_b.make_url("/events?topic=public.lb"), headers={"Last-Event-ID": first})
        got = [await read_event(resp) for _ in range(4)]
        assert [e["id"] for e in got] == missed
        assert [e["data"] for e in got] == [0, 1, 2, "from B"]
        live = await publish_event(app_b, "public.lb", "live")
        assert (await read_event(resp))["id"] == live
        resp.close()


async def test_retention_window_trims_old_events(make_realtime_app, aiohttp_client, backend):
    app = make_realtime_app(backend({"channels": {"retention": "600ms", "retention_max_events": 3}}))
    client = await aiohttp_client(app)
    old = await publish_event(app, "public.t", "old")
    await asyncio.sleep(0.8)
    recent = await publish_event(app, "public.t", "recent")

    async def replay_from(last_id: str) -> list[Any]:
        resp = await client.get("/events?topic=public.t", headers={"Last-Event-ID": last_id})
        got = []
        try:
            while True:
                got.append((await read_event(resp, timeout=0.3))["data"])
        except TimeoutError:
            pass
        resp.close()
        return got

    # Too old: only the recent event is left.
    assert await replay_from("0-0") == ["recent"]
    assert key(old) < key(recent)
    for n in range(5):
        await publish_event(app, "public.t", n)
    # At most retention_max_events per topic, the newest.
    assert await replay_from("0-0") == [2, 3, 4]
    assert await replay_from(recent) == [2, 3, 4]
    if backend.name == "redis":
        client_r = redis.asyncio.Redis.from_url(backend.redis_url)
        try:
            ttl = await client_r.pttl("plugboard:channels:public.t")
        finally:
            await client_r.aclose()
        # The stream of a topic that goes quiet expires with the window.
        assert 0 < ttl <= 1600


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


async def test_sse_bad_requests_get_clear_errors(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings({"websocket": {"max_subscriptions_per_connection": 2}}))
    client = await aiohttp_client(app)

    async def error(path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict]:
        async with client.request(method, path, headers=headers) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    status, body = await error("/events")
    assert status == 400 and "name at least one topic" in body["error"] and body["code"] == "BAD_REQUEST"
    for bad in ("has%20space", ".dot", "", "line%0Abreak", "x" * 201):
        status, body = await error(f"/events?topic=public.ok&topic={bad}")
        assert status == 400 and "invalid topic" in body["error"], (bad, body)
    status, body = await error("/events?topic=public.a&topic=public.b&topic=public.c")
    assert status == 400 and "at most 2" in body["error"]
    status, body = await error("/events?topic=public.a", headers={"Last-Event-ID": "yesterday"})
    assert status == 400 and "invalid event id 'yesterday'" in body["error"]
    status, body = await error("/events?topic=public.a&lastEventId=12-x")
    assert status == 400 and "invalid event id" in body["error"]
    status, body = await error("/events?topic=public.a", headers=bearer("bad"))
    assert status == 401 and body == {"error": "invalid token", "code": "UNAUTHENTICATED"}
    status, body = await error("/events?topic=public.a", headers=bearer("banned"))
    assert status == 403 and body["code"] == "FORBIDDEN"
    status, body = await error("/events?topic=user.alice", headers=bearer(f"alice@{time.time() - 5:.0f}"))
    assert status == 401 and body["error"] == "identity expired"
    async with client.post("/events?topic=public.a") as resp:
        assert resp.status == 405
    # Nothing was left subscribed by the refusals.
    assert app[CHANNELS].connections == set()
    assert app[CONNECTION_LIMITER].open() == {}


async def test_ws_bad_messages_get_errors_and_the_socket_stays_up(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings())
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.ok")
        cases = [
            ("not json", "invalid JSON"),
            ("[1, 2]", "a message must be a JSON object with a 'type'"),
            ('{"topic": "public.ok"}', "unknown message type 'null'"),
            ('{"type": "shout"}', "unknown message type 'shout'; expected one of: auth, subscribe, unsubscribe, publish, ping"),
            ('{"type": "subscribe"}', "'topic': invalid topic 'NoneType'"),
            ('{"type": "subscribe", "topic": "no spaces"}', "'topic': invalid topic 'no spaces'"),
            ('{"type": "subscribe", "topic": "public.x", "lastEventId": "soon"}', "invalid event id 'soon'"),
            ('{"type": "subscribe", "topic": "public.x", "lastEventId": 5}', "invalid event id 5"),
            ('{"type": "subscribe", "topic": "public.ok"}', "already subscribed to 'public.ok'"),
            ('{"type": "unsubscribe", "topic": "public.never"}', "not subscribed to 'public.never'"),
            ('{"type": "publish", "topic": "public.ok"}', "'publish' needs 'data' (any JSON value)"),
            ('{"type": "auth"}', "'auth' needs a non-empty string 'token'"),
            ('{"type": "auth", "token": 42}', "'auth' needs a non-empty string 'token'"),
        ]
        for text, expected in cases:
            await ws.send_str(text)
            reply = await ws_next(ws)
            assert reply["type"] == "error" and reply["message"].startswith(expected), (text, reply)
        await ws.send_bytes(b'{"type": "ping"}')
        assert await ws_next(ws) == {"type": "error", "message": "binary messages are not supported: send JSON text messages"}
        # Still up, still subscribed.
        await ws.send_json({"type": "ping"})
        assert await ws_next(ws) == {"type": "pong"}
        event_id = await publish_event(app, "public.ok", "still here")
        assert await ws_next(ws) == {"type": "event", "topic": "public.ok", "id": event_id, "data": "still here"}


async def test_ws_oversized_frame_closes_with_1009(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings({"websocket": {"max_message_size": "1KB"}})))
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "ping"})
        assert await ws_next(ws) == {"type": "pong"}
        await ws.send_json({"type": "publish", "topic": "public.big", "data": "x" * 2000})
        code, _ = await ws_closed(ws)
        assert code == 1009


async def test_ws_subscription_limit_per_connection(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings({"websocket": {"max_subscriptions_per_connection": 2}})))
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.1")
        await ws_subscribe(ws, "public.2")
        await ws.send_json({"type": "subscribe", "topic": "public.3"})
        assert await ws_next(ws) == {
            "type": "error",
            "message": "subscription limit reached: at most 2 topics per connection",
            "topic": "public.3",
        }
        await ws.send_json({"type": "unsubscribe", "topic": "public.1"})
        assert await ws_next(ws) == {"type": "unsubscribed", "topic": "public.1"}
        await ws_subscribe(ws, "public.3")


async def test_ws_auth_message_and_header(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "subscribe", "topic": "user.alice"})
        assert (await ws_next(ws))["type"] == "error"
        await ws.send_json({"type": "auth", "token": "alice"})
        assert await ws_next(ws) == {"type": "authenticated"}
        await ws_subscribe(ws, "user.alice")
        await ws.send_json({"type": "auth", "token": "bob"})
        assert await ws_next(ws) == {"type": "error", "message": "already authenticated on this connection"}

    async with client.ws_connect("/ws", headers=bearer("alice")) as ws:
        await ws_subscribe(ws, "user.alice")
        await ws.send_json({"type": "auth", "token": "bob"})
        assert await ws_next(ws) == {"type": "error", "message": "already authenticated on this connection"}

    for token, code in (("bad", 4401), ("banned", 4403), (f"alice@{time.time() - 5:.0f}", 4403)):
        async with client.ws_connect("/ws") as ws:
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws_next(ws))["type"] == "error"
            assert (await ws_closed(ws))[0] == code, token

    for token, code in (("bad", 4401), ("banned", 4403), (f"alice@{time.time() - 5:.0f}", 4403)):
        async with client.ws_connect("/ws", headers=bearer(token)) as ws:
            assert (await ws_closed(ws))[0] == code, token


async def test_ws_without_upgrade_is_426(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    async with client.get("/ws") as resp:
        assert resp.status == 426
        assert (await resp.json())["code"] == "UPGRADE_REQUIRED"


async def test_identity_expiry_ends_connections(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    token = f"alice@{time.time() + 1.0}"
    async with client.ws_connect("/ws", headers=bearer(token)) as ws:
        await ws_subscribe(ws, "user.alice")
        started = time.monotonic()
        code, reason = await ws_closed(ws, timeout=5)
        assert code == 4403 and "expired" in reason
        assert time.monotonic() - started < 3

    resp = await client.get("/events?topic=user.alice", headers=bearer(f"alice@{time.time() + 1.0}"))
    assert resp.status == 200
    lines = []
    async with asyncio.timeout(5):
        while line := await resp.content.readline():
            lines.append(line)
    assert b": closing: identity expired\r\n" in lines
    resp.close()


async def test_per_address_connection_limits(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings({"sse": {"max_connections_per_ip": 2}, "websocket": {"max_connections_per_ip": 1}}))
    client = await aiohttp_client(app)
    first = await client.get("/events?topic=public.a")
    second = await client.get("/events?topic=public.a")
    async with client.get("/events?topic=public.a") as third:
        assert third.status == 429 and (await third.json())["code"] == "TOO_MANY_REQUESTS"
    first.close()
    await eventually(lambda: app[CONNECTION_LIMITER].count("channels.events", "127.0.0.1") == 1)
    fourth = await client.get("/events?topic=public.a")
    assert fourth.status == 200
    second.close()
    fourth.close()

    async with client.ws_connect("/ws") as ws1:
        await ws_subscribe(ws1, "public.a")
        async with client.ws_connect("/ws") as ws2:
            code, reason = await ws_closed(ws2)
            assert code == 4429 and "Too many connections" in reason
        await ws1.send_json({"type": "ping"})
        assert await ws_next(ws1) == {"type": "pong"}


async def test_publish_event_api_checks_its_input(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings())
    await aiohttp_client(app)
    with pytest.raises(ValueError, match="invalid topic"):
        await publish_event(app, "bad topic", 1)
    with pytest.raises(TypeError, match="not JSON-serializable"):
        await publish_event(app, "public.a", {"when": object()})
    with pytest.raises(TypeError, match="not JSON-serializable"):
        await publish_event(app, "public.a", float("nan"))
    assert ID.match(await publish_event(app, "public.a", None))

    disabled = make_realtime_app(settings({"channels": {"enabled": False}}))
    client = await aiohttp_client(disabled)
    assert await publish_event(disabled, "public.a", 1) == ""
    async with client.get("/events?topic=public.a") as resp:
        assert resp.status == 404


# ---------------------------------------------------------------------------
# Slow readers, disconnects, shutdown
# ---------------------------------------------------------------------------


async def _stalled_sse(port: int, topic: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request whose client reads the headers and then nothing more (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


@pytest.mark.parametrize("overflow", ["drop_oldest", "close"])
async def test_slow_sse_reader_is_bounded(make_realtime_app, aiohttp_client, overflow):
    app = make_realtime_app(
        settings({"queue_size": 8, "overflow": overflow, "channels": {"retention_max_events": 10}, "sse": {"keepalive": "30s"}})
    )
    client = await aiohttp_client(app)
    reader, writer = await _stalled_sse(client.port, "public.flood")
    hub = app[CHANNELS]
    (stream,) = hub.connections
    (sub,) = stream.subscriptions.values()
    payload = "x" * 16384
    started = time.monotonic()
    for n in range(800):
        await publish_event(app, "public.flood", {"n": n, "pad": payload})
        await asyncio.sleep(0)  # let the stream's pump and writer run (and the writer stall)
        assert stream.pending <= 8 and sub.pending <= 8
    # Publishing ~13 MB to a client that reads nothing neither blocked nor buffered it all.
    assert time.monotonic() - started < 10
    if overflow == "drop_oldest":
        assert stream.dropped > 0 and not stream.overflowed
        assert stream in hub.connections
    else:
        assert stream.overflowed and stream.dropped == 0
        await eventually(lambda: stream not in hub.connections)
    writer.transport.abort()
    await eventually(lambda: not hub.connections and not app[keys.PUBSUB].subscriber_counts())


async def test_slow_ws_reader_under_close_policy_gets_4429(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings({"queue_size": 8, "overflow": "close", "channels": {"retention_max_events": 10}}))
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.flood")
        payload = "x" * 16384
        for n in range(800):
            await publish_event(app, "public.flood", {"n": n, "pad": payload})
            if n % 50 == 0:
                await asyncio.sleep(0)
        received = 0
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    break
                received += 1
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 4429) and "Too slow" in msg.extra, msg
        assert received < 800


def _ws_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 126
    # Client frames must be masked; a zero mask leaves the payload as is.
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data


async def _open_sse(port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events?topic=public.churn HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return writer


async def _abrupt_sse(port: int) -> None:
    _reset(await _open_sse(port))


async def _abrupt_ws(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(_ws_frame('{"type":"subscribe","topic":"public.churn"}'))
    frame = await reader.readexactly(2)
    body = await reader.readexactly(frame[1] & 0x7F)
    assert json.loads(body) == {"type": "subscribed", "topic": "public.churn"}
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    # Linger 0: the close sends RST, like a client that vanished.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_no_leaks_after_1000_abrupt_disconnects(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings({"sse": {"max_connections_per_ip": 1000}, "websocket": {"max_connections_per_ip": 1000}}))
    client = await aiohttp_client(app)
    hub = app[CHANNELS]
    await asyncio.sleep(0.05)
    baseline = len(asyncio.all_tasks())
    for batch in range(20):
        await asyncio.gather(*(_abrupt_sse(client.port) for _ in range(25)), *(_abrupt_ws(client.port) for _ in range(25)))
    await eventually(lambda: not hub.connections, timeout=10)
    await eventually(lambda: not app[keys.PUBSUB].subscriber_counts())
    await eventually(lambda: not app[CONNECTION_LIMITER].open())
    await eventually(lambda: len(asyncio.all_tasks()) <= baseline, timeout=10)
    # Still serving.
    async with client.ws_connect("/ws") as ws:
        await ws_subscribe(ws, "public.churn")


async def test_sse_resources_freed_without_handler_cancellation(make_realtime_app):
    """As under ``plugboard serve`` (aiohttp does not cancel handlers): the keep-alive finds the gone client."""
    app = make_realtime_app(settings({"sse": {"keepalive": "100ms"}}))
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        writers = await asyncio.gather(*(_open_sse(port) for _ in range(50)))
        hub = app[CHANNELS]
        assert len(hub.connections) == 50
        for writer in writers:
            _reset(writer)
        await eventually(lambda: not hub.connections, timeout=5)
        await eventually(lambda: not app[keys.PUBSUB].subscriber_counts())
    finally:
        await runner.cleanup()


async def test_shutdown_closes_open_connections(make_realtime_app, aiohttp_server):
    app = make_realtime_app(settings())
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/ws"))
        await ws_subscribe(ws, "public.bye")
        resp = await session.get(server.make_url("/events?topic=public.bye"))
        assert resp.status == 200
        started = time.monotonic()
        closing = asyncio.create_task(server.close())
        code, reason = await ws_closed(ws)
        assert code == 1001 and reason == "Server shutting down"
        lines = []
        async with asyncio.timeout(5):
            while line := await resp.content.readline():
                lines.append(line)
        assert b": closing: server shutting down\r\n" in lines
        await closing
        assert time.monotonic() - started < 5
        resp.close()
        await ws.close()


# ---------------------------------------------------------------------------
# The history on its own
# ---------------------------------------------------------------------------


async def test_memory_history_ids_ring_buffers_and_expiry():
    now = [1000.0]
    history = MemoryHistory(retention=10.0, max_events=3, clock=lambda: now[0])
    a = await history.append("t.a", '{"n":1}')
    b = await history.append("t.b", '"b"')
    now[0] = 999.0  # the wall clock steps back: ids still grow
    c = await history.append("t.a", "3")
    assert (a, b, c) == ("1000000-0", "1000000-1", "1000000-2")
    now[0] = 1001.0
    d = await history.append("t.a", "4")
    assert d == "1001000-0"
    assert [e.id for e in await history.after("0-0", ["t.a", "t.b"])] == [a, b, c, d]
    assert [e.data for e in await history.after(a, ["t.a"])] == [3, 4]
    await history.append("t.a", "5")
    # Three per topic: t.a's oldest is gone, t.b keeps its one.
    assert [e.data for e in await history.after("0-0", ["t.a"])] == [3, 4, 5]
    assert [e.data for e in await history.after("0-0", ["t.b"])] == ["b"]
    now[0] = 1012.0
    assert await history.after("0-0", ["t.a", "t.b"]) == []
    await history.append("t.c", "1")
    # The sweep dropped the quiet topics altogether.
    assert len(history) == 1 and set(history._topics) == {"t.c"}
    with pytest.raises(ValueError, match="invalid event id"):
        await history.after("abc", ["t.a"])


async def test_redis_history_is_ordered_across_topics_and_survives_script_flush(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        history = RedisHistory(client, prefix="test:", retention=60.0, max_events=2)
        ids = [await history.append(topic, json.dumps(n)) for n, topic in enumerate(["a", "b", "a", "b", "a"])]
        assert [key(i) for i in ids] == sorted(key(i) for i in ids) and len(set(ids)) == 5
        events = await history.after("0-0", ["a", "b"])
        # Two per topic, merged in id order.
        assert [(e.topic, e.data) for e in events] == [("b", 1), ("a", 2), ("b", 3), ("a", 4)]
        assert [e.data for e in await history.after(ids[2], ["a", "b"])] == [3, 4]
        assert await history.after(ids[-1], ["a"]) == []
        await client.script_flush()  # as after a Redis restart: the script is reloaded
        later = await history.append("a", '"later"')
        assert key(later) > key(ids[-1])
        assert await client.exists("test:channels:a") and 0 < await client.pttl("test:channels:a") <= 61000
    finally:
        await client.aclose()
