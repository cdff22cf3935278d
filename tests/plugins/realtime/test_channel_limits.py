"""Direct channels under abuse (issue 9, finding 7): who may publish, and how much is kept.

The review's probe: an anonymous ``/ws`` client published 300 events of 60 KB
to distinct ``public.*`` topics in 0.2 s, and the memory history kept them
all (+17 MB for five minutes, no cap on topics). Now publishing is its own
permission (anonymous clients only read by default), client publishes are
capped in size and rate per connection, and the memory history in topics
and bytes. Real servers on loopback; identities from ``pb_token_auth``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc

import pytest
from test_channels import authz_plugin, bearer, read_event, settings, ws_closed, ws_next, ws_subscribe

from plugboard.plugins.realtime.channels import CHANNELS, publish_event
from plugboard.plugins.realtime.history import EVENT_OVERHEAD, TOPIC_OVERHEAD, MemoryHistory

PAD = "x" * 60_000


async def publish(ws, topic: str, data) -> dict:
    await ws.send_json({"type": "publish", "topic": topic, "data": data})
    return await ws_next(ws)


async def test_the_review_probe_is_refused_for_anonymous_clients(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings())
    client = await aiohttp_client(app)
    history = app[CHANNELS].history
    async with client.ws_connect("/ws") as ws:
        replies = [await publish(ws, f"public.probe{n}", {"n": n, "pad": PAD}) for n in range(300)]
        assert all(r["type"] == "error" for r in replies), [r for r in replies if r["type"] != "error"][:1]
        messages = {r["message"] for r in replies}
        assert "not allowed to publish to topic 'public.probe0'" in messages
        assert any(m.startswith("publishing too fast: at most 10 per second") for m in messages)
        # Reading stays open to anonymous clients, and the socket is up.
        await ws_subscribe(ws, "public.probe0")
    assert len(history) == 0 and history.retained_bytes == 0


async def test_publishing_is_a_separate_permission(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    async with client.ws_connect("/ws") as anon, client.ws_connect("/ws", headers=bearer("alice")) as alice:
        await ws_subscribe(anon, "public.news")
        assert await publish(anon, "public.news", 1) == {
            "type": "error",
            "message": "not allowed to publish to topic 'public.news'",
            "topic": "public.news",
        }
        assert (await publish(alice, "public.news", 2))["type"] == "published"
        assert (await ws_next(anon))["data"] == 2
        assert (await publish(alice, "user.alice", 3))["type"] == "published"
        assert (await publish(alice, "user.bob", 4))["type"] == "error"
        assert (await publish(alice, "private.x", 5))["type"] == "error"
        # Signing in on the socket opens publishing.
        await anon.send_json({"type": "auth", "token": "carol"})
        assert await ws_next(anon) == {"type": "authenticated"}
        assert (await publish(anon, "public.news", 6))["type"] in ("published", "event")


@pytest.mark.parametrize(
    "policy, anonymous, signed_in",
    [("anyone", True, True), ("signed_in", False, True), ("nobody", False, False)],
)
async def test_publish_setting(make_realtime_app, aiohttp_client, policy, anonymous, signed_in):
    client = await aiohttp_client(make_realtime_app(settings({"channels": {"publish": policy}})))
    async with client.ws_connect("/ws") as anon, client.ws_connect("/ws", headers=bearer("alice")) as alice:
        assert ((await publish(anon, "public.a", 1))["type"] == "published") is anonymous
        assert ((await publish(alice, "public.a", 1))["type"] == "published") is signed_in
        # Never beyond what the client may read.
        assert (await publish(anon, "user.alice", 1))["type"] == "error"


async def test_the_hook_decides_publishing_per_action(make_realtime_app, aiohttp_client):
    def decide(context, topic, action):
        if topic == "public.board" and action == "publish":
            return True  # a plugin opens this one topic to anonymous publishers
        if topic == "public.readonly" and action == "publish":
            return False
        return None

    plugin = authz_plugin("authz_board", decide)
    client = await aiohttp_client(make_realtime_app(settings({"channels": {"publish": "nobody"}}), plugins=[plugin]))
    async with client.ws_connect("/ws") as anon, client.ws_connect("/ws", headers=bearer("alice")) as alice:
        assert (await publish(anon, "public.board", "hi"))["type"] == "published"
        assert (await publish(alice, "public.readonly", "hi"))["type"] == "error"
        await ws_subscribe(anon, "public.readonly")
    assert ("public.board", "publish") in plugin.calls and ("public.readonly", "subscribe") in plugin.calls


async def test_payload_size_cap(make_realtime_app, aiohttp_client):
    app = make_realtime_app(settings({"channels": {"max_payload_size": "1KB"}}))
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws", headers=bearer("alice")) as ws:
        # The JSON of the data is what counts: a string of 1,022 characters is 1,024 bytes with its quotes.
        assert (await publish(ws, "public.s", "x" * 1022))["type"] == "published"
        reply = await publish(ws, "public.s", "x" * 1023)
        assert reply == {
            "type": "error",
            "message": "'data' is 1025 bytes of JSON; the limit (realtime.channels.max_payload_size) is 1024",
            "topic": "public.s",
        }
        # UTF-8 bytes, not characters.
        assert (await publish(ws, "public.s", "é" * 600))["type"] == "error"
        assert (await publish(ws, "public.s", {"nan": "fine"}))["type"] == "published"
    # The server's own publish_event is trusted: no size cap.
    assert await publish_event(app, "public.s", "x" * 5000)


async def test_publish_rate_per_connection(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings({"channels": {"publish_rate": 5}})))
    async with client.ws_connect("/ws", headers=bearer("alice")) as ws, client.ws_connect("/ws", headers=bearer("bob")) as other:
        started = time.monotonic()
        replies = [await publish(ws, "public.r", n) for n in range(20)]
        elapsed = time.monotonic() - started
        published = sum(r["type"] == "published" for r in replies)
        # A burst of 5, and what refilled meanwhile (5 a second).
        assert 5 <= published <= 5 + int(elapsed * 5) + 1, (published, elapsed)
        refused = [r for r in replies if r["type"] == "error"]
        assert refused and refused[0]["message"].startswith("publishing too fast: at most 5 per second on one connection")
        # Per connection: another client is not held back.
        assert (await publish(other, "public.r", "other"))["type"] == "published"
        await asyncio.sleep(0.5)
        assert (await publish(ws, "public.r", "later"))["type"] == "published"


async def test_the_probe_with_publishing_allowed_keeps_memory_bounded(make_realtime_app, aiohttp_client):
    cap = 2 * 1024 * 1024
    app = make_realtime_app(
        settings(
            {
                "websocket": {"max_message_size": "128KB"},
                "channels": {
                    "publish": "anyone",
                    "max_payload_size": "64KB",
                    "publish_rate": 1000,
                    "max_retained_topics": 100,
                    "max_retained_bytes": cap,
                },
            }
        )
    )
    client = await aiohttp_client(app)
    history = app[CHANNELS].history
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with client.ws_connect("/ws") as ws:
            ids = []
            for n in range(300):
                reply = await publish(ws, f"public.probe{n}", {"n": n, "pad": PAD})
                assert reply["type"] == "published", reply
                ids.append(reply["id"])
                assert history.retained_bytes <= cap
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 18 MB published; the history keeps what the cap allows (the newest) and no more.
    assert len(history._topics) <= 100
    assert cap - (60_000 + EVENT_OVERHEAD + TOPIC_OVERHEAD + 100) < history.retained_bytes <= cap
    assert grown < cap + 1024 * 1024, grown
    # What is kept is the newest: the last topic replays, the first does not.
    resp = await client.get("/events?topic=public.probe299&topic=public.probe0", headers={"Last-Event-ID": "0-0"})
    event = await read_event(resp)
    assert (event["id"], event["event"], event["data"]["n"]) == (ids[-1], "public.probe299", 299)
    resp.close()


async def test_memory_history_caps_topics_and_bytes():
    now = [1000.0]
    history = MemoryHistory(retention=60.0, max_events=10, max_topics=3, max_bytes=10_000, clock=lambda: now[0])
    for topic in ("a", "b", "c"):
        await history.append(topic, "1")
    await history.append("a", "2")  # "a" is now the most recently published
    await history.append("d", "3")  # a fourth topic: "b", the least recent, goes
    assert list(history._topics) == ["c", "a", "d"]
    assert [e.data for e in await history.after("0-0", ["a"])] == [1, 2]
    expected = 3 * TOPIC_OVERHEAD + 4 * (1 + EVENT_OVERHEAD)
    assert history.retained_bytes == expected

    # Bytes: the least recently published topic loses its oldest events first.
    big = json.dumps("y" * 3000)
    await history.append("a", big)
    await history.append("d", big)
    await history.append("a", big)
    assert history.retained_bytes <= 10_000
    assert "c" not in history._topics  # emptied, then forgotten
    assert [e.data for e in await history.after("0-0", ["a"])][-1] == "y" * 3000
    # An event bigger than the whole budget is not kept (it is still delivered live).
    await history.append("e", json.dumps("z" * 20_000))
    assert await history.after("0-0", ["e"]) == []
    assert history.retained_bytes <= 10_000

    # Everything expires: nothing is counted any more.
    now[0] += 120
    await history.append("f", "1")
    assert list(history._topics) == ["f"] and history.retained_bytes == TOPIC_OVERHEAD + 1 + EVENT_OVERHEAD


async def test_auth_message_with_a_token_nobody_accepts_is_an_error(make_realtime_app, aiohttp_client):
    # No auth plugin: no plugboard_context implementation takes the token.
    client = await aiohttp_client(make_realtime_app(settings(), auth=False))
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "auth", "token": "anything-at-all"})
        assert await ws_next(ws) == {"type": "error", "message": "authentication failed: the token was not accepted"}
        code, reason = await ws_closed(ws)
        assert code == 4401 and "not accepted" in reason
