"""Presence: heartbeat, onlineUsers, userOnline, TTL expiry without a disconnect, Redis across apps."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard import keys
from plugboard.testing import TransportWS, eventually, gql
from realtime_testkit import code, subscribe
from plugboard.plugins.realtime import presence
from plugboard.plugins.realtime.keys import PRESENCE

# The GraphQL transports are other modules' business: these tests reach the
# features over plain HTTP and through the engine, so switch them off.
ISOLATED = {"websockets": False, "serverSentEvents": False, "channels": {"enabled": False}}


def settings(**realtime) -> dict:
    return {"realtime": {**ISOLATED, **realtime}}


USER_ONLINE = "subscription { userOnline { id online lastSeen } }"
ONLINE_USERS = "{ onlineUsers { id online lastSeen } }"


async def test_heartbeat_and_online_users(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    assert (await gql(client, "mutation { heartbeat }", token="alice")) == {"data": {"heartbeat": True}}
    assert (await gql(client, "mutation { heartbeat }", token="bob"))["data"]["heartbeat"] is True
    # A repeated heartbeat is accepted (and cheap).
    assert (await gql(client, "mutation { heartbeat }", token="alice"))["data"]["heartbeat"] is True
    users = (await gql(client, ONLINE_USERS, token="carol"))["data"]["onlineUsers"]
    assert [(u["id"], u["online"]) for u in users] == [("alice", True), ("bob", True)]
    seen = dt.datetime.fromisoformat(users[0]["lastSeen"])
    assert abs(seen.timestamp() - time.time()) < 5


async def test_presence_needs_identity(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    result = await gql(client, "mutation { heartbeat }", token=None)
    assert result["data"] is None and code(result) == "UNAUTHENTICATED"
    assert code(await gql(client, ONLINE_USERS, token=None)) == "UNAUTHENTICATED"
    stream = await subscribe(client.app, USER_ONLINE, user=None)
    with pytest.raises(TartifletteError) as e:
        await asyncio.wait_for(anext(stream), 5)
    assert e.value.extensions["code"] == "UNAUTHENTICATED"
    await stream.aclose()
    # Nobody became online through the refused calls.
    assert (await gql(client, ONLINE_USERS, token="alice"))["data"]["onlineUsers"] == []


async def test_user_online_streams_online_then_offline_without_disconnect(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings(presence={"ttl": "300ms"})))
    app = client.app
    pubsub = app[keys.PUBSUB]
    stream = await subscribe(app, USER_ONLINE, user="watcher")
    first = asyncio.ensure_future(anext(stream))
    await eventually(lambda: pubsub.subscriber_counts().get(presence.TOPIC) == 1)

    started = time.monotonic()
    assert (await gql(client, "mutation { heartbeat }", token="alice"))["data"]["heartbeat"] is True
    online = (await asyncio.wait_for(first, 5))["data"]["userOnline"]
    assert online["id"] == "alice" and online["online"] is True and online["lastSeen"]

    # alice never says goodbye: the sweeper notices the TTL has passed.
    offline = (await asyncio.wait_for(anext(stream), 5))["data"]["userOnline"]
    elapsed = time.monotonic() - started
    assert offline == {"id": "alice", "online": False, "lastSeen": online["lastSeen"]}
    assert 0.3 <= elapsed < 2.0
    assert (await gql(client, ONLINE_USERS, token="watcher"))["data"]["onlineUsers"] == []

    # Coming back is a new online event.
    await gql(client, "mutation { heartbeat }", token="alice")
    again = (await asyncio.wait_for(anext(stream), 5))["data"]["userOnline"]
    assert (again["id"], again["online"]) == ("alice", True)

    await stream.aclose()
    # The generators inside the engine's stream are closed by the event
    # loop's finalizer a few iterations later; the pubsub subscription with them.
    await eventually(lambda: presence.TOPIC not in pubsub.subscriber_counts())


async def test_expired_user_is_not_listed_before_the_sweep(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings(presence={"ttl": "200ms"})))
    tracker = client.app[PRESENCE]
    await gql(client, "mutation { heartbeat }", token="alice")
    assert [u["id"] for u in (await gql(client, ONLINE_USERS, token="alice"))["data"]["onlineUsers"]] == ["alice"]
    # Read straight from the store at a time past the TTL: expired even
    # if the sweeper has not run yet.
    assert await tracker.store.online(time.time() + 0.25) == []


async def test_touch_is_the_transport_hook(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings()))
    app = client.app
    await presence.touch(app, "dave")
    await presence.touch(app, None)  # anonymous: nothing to record
    await presence.touch(app, {"id": "erin"})  # identities may be mappings
    users = (await gql(client, ONLINE_USERS, token="alice"))["data"]["onlineUsers"]
    assert [u["id"] for u in users] == ["dave", "erin"]


async def test_presence_switched_off(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings(features={"presence": False})))
    assert PRESENCE not in client.app
    await presence.touch(client.app, "dave")  # a no-op, never an error
    result = await gql(client, "{ onlineUsers { id } }", token="alice")
    assert "data" not in result
    assert any("onlineUsers" in e["message"] for e in result["errors"]), result


async def test_memory_store_transitions():
    store = presence.MemoryPresenceStore(ttl=10)
    assert await store.touch("a", 100.0) is True
    assert await store.touch("a", 105.0) is False
    assert await store.touch("b", 101.0) is True
    assert await store.expire(112.0) == [("b", 101.0)]
    assert await store.online(112.0) == [("a", 105.0)]
    # Expired but not yet swept: the next heartbeat is a transition.
    assert await store.touch("a", 120.0) is True
    assert await store.expire(125.0) == []


async def test_presence_across_two_apps_on_one_redis(make_realtime_app, aiohttp_client, redis_url):
    data = {**settings(presence={"ttl": "400ms"}), "redis": {"url": redis_url}, "services": {"pubsub": {"provider": "redis"}}}
    a = await aiohttp_client(make_realtime_app(data))
    b = await aiohttp_client(make_realtime_app(data))
    assert isinstance(a.app[PRESENCE].store, presence.RedisPresenceStore)

    watch = await subscribe(b.app, USER_ONLINE, user="watcher")
    first = asyncio.ensure_future(anext(watch))
    redis_client = a.app[keys.REDIS]
    channel = "plugboard:" + presence.TOPIC

    async def subscribed() -> bool:
        return (await redis_client.pubsub_numsub(channel))[0][1] >= 1

    await eventually(subscribed, what="B's subscription on Redis")

    assert (await gql(a, "mutation { heartbeat }", token="alice"))["data"]["heartbeat"] is True
    users = (await gql(b, ONLINE_USERS, token="bob"))["data"]["onlineUsers"]
    assert [(u["id"], u["online"]) for u in users] == [("alice", True)]
    # A heartbeat on B for a user already online through A is no transition.
    await gql(b, "mutation { heartbeat }", token="alice")

    online = (await asyncio.wait_for(first, 5))["data"]["userOnline"]
    assert (online["id"], online["online"]) == ("alice", True)
    offline = (await asyncio.wait_for(anext(watch), 5))["data"]["userOnline"]
    assert (offline["id"], offline["online"]) == ("alice", False)
    # Both apps sweep; exactly one of them published the offline transition.
    extra = asyncio.ensure_future(anext(watch))
    done, _ = await asyncio.wait([extra], timeout=0.8)
    assert not done, extra.result()
    extra.cancel()
    with pytest.raises(asyncio.CancelledError):
        await extra
    await watch.aclose()
    assert (await gql(a, ONLINE_USERS, token="bob"))["data"]["onlineUsers"] == []
    assert await redis_client.zcard(presence.REDIS_KEY) == 0


async def test_redis_outage_is_logged_not_fatal(make_realtime_app, aiohttp_client, caplog):
    from plugboard.testing_servers import RedisServer

    caplog.set_level(logging.INFO, logger="plugboard.realtime.presence")
    server = RedisServer().start()
    client = None
    try:
        data = {**settings(presence={"ttl": "400ms"}), "redis": {"url": server.url}}
        client = await aiohttp_client(make_realtime_app(data))
        app = client.app
        assert (await gql(client, "mutation { heartbeat }", token="alice"))["data"]["heartbeat"] is True

        server.process.terminate()
        server.process.wait()
        caplog.clear()
        await presence.touch(app, "bob")  # what transports call: logs, never raises
        assert "heartbeat of user 'bob' not recorded" in caplog.text
        failed = await gql(client, "mutation { heartbeat }", token="carol")
        assert failed["data"] is None and code(failed) == "INTERNAL_SERVER_ERROR"
        # The sweeper keeps running through the outage and says so once.
        await asyncio.sleep(0.5)
        assert caplog.text.count("presence sweep failed") == 1

        server.restart()
        assert (await gql(client, "mutation { heartbeat }", token="carol"))["data"]["heartbeat"] is True
        users = (await gql(client, ONLINE_USERS, token="carol"))["data"]["onlineUsers"]
        assert [u["id"] for u in users] == ["carol"]
        await eventually(lambda: "presence sweep works again" in caplog.text)
    finally:
        if client is not None:
            await client.close()  # before the server goes: no outage at shutdown
        server.stop()


async def test_websocket_messages_are_heartbeats(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app())
    async with await TransportWS.connect(client, {"authToken": "erin"}) as ws:
        await ws.send({"type": "ping"})
        assert (await ws.receive())["type"] == "pong"
        resp = await client.post("/graphql", json={"query": "{ onlineUsers { id online } }"}, headers={"Authorization": "Bearer frank"})
        assert {"id": "erin", "online": True} in (await resp.json())["data"]["onlineUsers"]


async def test_shutdown_ends_a_sweeper_that_missed_its_cancellation(make_realtime_app, aiohttp_client):
    client = await aiohttp_client(make_realtime_app(settings(presence={"ttl": "200ms"})))
    tracker = client.app[PRESENCE]
    sweeping = asyncio.Event()
    missed = []

    async def expire(now: float) -> list:
        # Misses its first cancellation, as a Redis call on Python 3.11 may
        # (see plugboard.cancelling); the sweeper then goes back to sleep.
        sweeping.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if missed:
                raise
            missed.append(True)
        return []

    tracker.store.expire = expire
    await asyncio.wait_for(sweeping.wait(), 5)
    closing = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait({closing}, timeout=3)
    if not done:
        closing.cancel()  # reaches the sweeper through the await: it ends
    assert done, "shutdown waits on a sweeper that missed its cancellation"
