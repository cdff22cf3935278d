"""The real-time plugin's pubsub providers (``memory`` and ``redis``), against a real redis-server.

Most behaviour is tested on both providers through ``make_pubsub`` (they
must behave the same); the Redis-only parts (one connection per app,
instances sharing a server, reconnect after a restart, publish while Redis
is down) use the session server or a private one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
from aiohttp import web

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.providers.pubsub import PubSub, Subscription
from plugboard.providers.redis import RedisConfig, close_redis, connect_redis
from plugboard.providers.registry import ProviderRegistry
from plugboard.builtin_hooks import plugboard_providers as core_providers
from plugboard.providers.pubsub import PubSubOptions
from plugboard.providers.memory_pubsub import MemoryPubSub
from plugboard.providers.redis_pubsub import RedisPubSub
from plugboard.providers.subscriptions import QueueSubscription
from plugboard.testing import eventually
from plugboard.testing_servers import RedisServer, free_port

LOGGER = "plugboard.pubsub"
# Generous: only a failing test ever waits this long.
WAIT = 5.0

MakePubSub = Callable[..., Awaitable[Any]]


async def recv(sub: Subscription, timeout: float = WAIT) -> Any:
    return await asyncio.wait_for(anext(aiter(sub)), timeout)


async def ready(*subs: QueueSubscription) -> None:
    results = await asyncio.gather(*(s.wait_ready() for s in subs))
    assert all(results), results


def provider_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("plugboard.pubsub")]


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


# ---------------------------------------------------------------------------
# Fixtures: providers on a real Redis, closed (with their clients) afterwards.
# ---------------------------------------------------------------------------


class _Providers:
    """Creates providers (and the redis clients they use) and closes them all at teardown."""

    def __init__(self) -> None:
        self.clients: list[redis.asyncio.Redis] = []
        self.pubsubs: list[Any] = []

    async def client(self, url: str) -> redis.asyncio.Redis:
        """A client built as the app builds its shared one."""
        client = await connect_redis(RedisConfig(url=url, connect_timeout=2.0))
        assert client is not None
        self.clients.append(client)
        return client

    async def redis(self, url: str, options: PubSubOptions | None = None, *, timeout: float = 3.0) -> RedisPubSub:
        """A started RedisPubSub with a client of its own: one app instance."""
        pubsub = RedisPubSub(options or PubSubOptions(), app={keys.REDIS: await self.client(url)}, timeout=timeout)
        await pubsub.start()
        self.pubsubs.append(pubsub)
        return pubsub

    async def memory(self, options: PubSubOptions | None = None) -> MemoryPubSub:
        pubsub = MemoryPubSub(options or PubSubOptions())
        await pubsub.start()
        self.pubsubs.append(pubsub)
        return pubsub

    async def aclose(self) -> None:
        for pubsub in self.pubsubs:
            await pubsub.close()
        for client in self.clients:
            await close_redis(client)


@pytest.fixture
async def providers() -> AsyncIterator[_Providers]:
    made = _Providers()
    yield made
    await made.aclose()
    assert provider_tasks() == []


@pytest.fixture
async def redis_clients(providers: _Providers) -> Callable[[str], Awaitable[redis.asyncio.Redis]]:
    """``await connect(url)`` -> a client, closed at teardown."""
    return providers.client


@pytest.fixture
async def make_redis_pubsub(redis_url: str, providers: _Providers) -> MakePubSub:
    """``await make(options, url=..., timeout=...)`` -> a started RedisPubSub (its own client: one app)."""

    async def make(options: PubSubOptions | None = None, *, url: str = redis_url, timeout: float = 3.0) -> RedisPubSub:
        return await providers.redis(url, options, timeout=timeout)

    return make


@pytest.fixture(params=["memory", "redis"])
async def make_pubsub(request: pytest.FixtureRequest, providers: _Providers) -> MakePubSub:
    """Either provider, started; tests using it run once per provider."""
    if request.param == "memory":
        return providers.memory
    # A sync fixture, so it can be requested only for the redis variant.
    url = request.getfixturevalue("redis_url")

    async def make(options: PubSubOptions | None = None) -> RedisPubSub:
        return await providers.redis(url, options)

    return make


@pytest.fixture
def pubsub_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return caplog


# ---------------------------------------------------------------------------
# Both providers
# ---------------------------------------------------------------------------


async def test_implements_the_protocol(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    assert isinstance(pubsub, PubSub)
    await pubsub.check()
    async with pubsub.subscribe("books.updated.7") as sub:
        assert isinstance(sub, Subscription)
        assert (sub.topic, sub.dropped, sub.overflowed, sub.closed) == ("books.updated.7", 0, False, False)
        await pubsub.publish("books.updated.7", {"id": "7"})
        assert await recv(sub) == {"id": "7"}
        assert pubsub.subscriber_counts() == {"books.updated.7": 1}
    # Leaving ``async with`` closes the subscription and unregisters it.
    assert sub.closed
    assert pubsub.subscriber_counts() == {}
    assert [p async for p in sub] == []


async def test_fan_out_to_many_subscribers_in_order(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    subs = [pubsub.subscribe("news") for _ in range(200)]
    await ready(*subs)
    for n in range(3):
        await pubsub.publish("news", {"n": n})
    for sub in subs:
        assert [await recv(sub) for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert sub.dropped == 0
    assert pubsub.subscriber_counts() == {"news": 200}
    for sub in subs:
        await sub.close()
    assert pubsub.subscriber_counts() == {}


async def test_topics_are_isolated(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    a, ab, b = pubsub.subscribe("a"), pubsub.subscribe("a.b"), pubsub.subscribe("b")
    await ready(a, ab, b)
    await pubsub.publish("a", "for a")
    await pubsub.publish("a.b", "for a.b")
    await pubsub.publish("b", "for b")
    # Delivery keeps publish order, so the first payload each one sees
    # proves the earlier events for other topics never reached it.
    assert await recv(a) == "for a"
    assert await recv(ab) == "for a.b"
    assert await recv(b) == "for b"
    assert (a.pending, ab.pending, b.pending) == (0, 0, 0)
    for sub in (a, ab, b):
        await sub.close()


async def test_payloads_round_trip_through_json(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    first, second = pubsub.subscribe("t"), pubsub.subscribe("t")
    await ready(first, second)
    payload = {"tuple": (1, 2), 3: "int key", "nested": {"list": [1.5, None, True]}, "text": "é ✓"}
    await pubsub.publish("t", payload)
    # The publisher changing its object afterwards changes nothing delivered.
    payload["nested"]["list"].append("later")
    expected = {"tuple": [1, 2], "3": "int key", "nested": {"list": [1.5, None, True]}, "text": "é ✓"}
    got_first = await recv(first)
    assert got_first == expected
    # One subscriber mutating its payload does not affect another's.
    got_first["nested"]["list"].clear()
    assert await recv(second) == expected
    for scalar in (None, 0, "x", [1, "two"]):
        await pubsub.publish("t", scalar)
        assert await recv(first) == scalar
        assert await recv(second) == scalar
    await first.close()
    await second.close()


def _circular() -> list:
    value: list = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    "payload",
    [object(), {1, 2}, b"bytes", float("nan"), float("inf"), {"when": time}, _circular()],
    ids=["object", "set", "bytes", "nan", "inf", "module", "circular"],
)
async def test_non_json_payload_raises_type_error(make_pubsub: MakePubSub, payload: Any) -> None:
    pubsub = await make_pubsub()
    async with pubsub.subscribe("t") as sub:
        with pytest.raises(TypeError, match="not JSON-serializable"):
            await pubsub.publish("t", payload)
        await pubsub.publish("t", "after")
        # Nothing of the refused payload was delivered.
        assert await recv(sub) == "after"


async def test_bad_topics_are_refused(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    with pytest.raises(TypeError, match="topic must be a str"):
        await pubsub.publish(None, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic must be a str"):
        pubsub.subscribe(b"t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        await pubsub.publish("", {})
    with pytest.raises(ValueError, match="must not be empty"):
        pubsub.subscribe("")
    assert pubsub.subscriber_counts() == {}


async def test_slow_subscriber_drops_oldest_and_counts(make_pubsub: MakePubSub, pubsub_log) -> None:
    pubsub = await make_pubsub(PubSubOptions(queue_size=4, overflow="drop_oldest"))
    slow, fast = pubsub.subscribe("t"), pubsub.subscribe("t")
    await ready(slow, fast)
    started = time.monotonic()
    for n in range(500):
        # The publisher never waits for ``slow``; ``fast`` gets every event.
        await asyncio.wait_for(pubsub.publish("t", n), WAIT)
        assert await recv(fast) == n
    elapsed = time.monotonic() - started
    assert fast.dropped == 0
    assert slow.dropped == 496
    assert not slow.overflowed and not slow.closed
    assert [await recv(slow) for _ in range(4)] == [496, 497, 498, 499]
    # Rate-limited: at most one warning per second per subscription.
    warnings = records(pubsub_log, "is too slow")
    assert 1 <= len(warnings) <= int(elapsed) + 1
    assert "'t'" in warnings[0].getMessage()
    await slow.close()
    await fast.close()


async def test_drop_warning_is_rate_limited_per_subscription(pubsub_log) -> None:
    pubsub = MemoryPubSub(PubSubOptions(queue_size=1))
    one, two = pubsub.subscribe("t"), pubsub.subscribe("t")
    for n in range(1000):
        await pubsub.publish("t", n)
    assert one.dropped == two.dropped == 999
    assert len(records(pubsub_log, "is too slow")) == 2
    await pubsub.close()


async def test_slow_subscriber_closed_under_close_policy(make_pubsub: MakePubSub, pubsub_log) -> None:
    pubsub = await make_pubsub(PubSubOptions(queue_size=4, overflow="close"))
    slow, fast = pubsub.subscribe("t"), pubsub.subscribe("t")
    await ready(slow, fast)
    for n in range(5):
        await pubsub.publish("t", n)
        assert await recv(fast) == n
    assert slow.overflowed and slow.closed
    assert slow.dropped == 0
    # Its iteration ends at once; what it had queued is discarded.
    assert [p async for p in slow] == []
    assert pubsub.subscriber_counts() == {"t": 1}
    assert len(records(pubsub_log, "overflow policy 'close'")) == 1
    # The others carry on.
    await pubsub.publish("t", 5)
    assert await recv(fast) == 5
    assert not fast.overflowed
    await slow.close()  # idempotent after an overflow
    await fast.close()
    assert pubsub.subscriber_counts() == {}


async def test_close_ends_iterators_promptly(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub()
    subs = [pubsub.subscribe(f"t{i % 2}") for i in range(4)]
    await ready(*subs)
    received: list[list[Any]] = [[] for _ in subs]

    async def consume(sub: Subscription, into: list[Any]) -> None:
        async for payload in sub:
            into.append(payload)

    tasks = [asyncio.create_task(consume(s, r)) for s, r in zip(subs, received)]
    await pubsub.publish("t0", "x")
    await eventually(lambda: received[0] == ["x"] and received[2] == ["x"], what="first event")
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks)
    started = time.monotonic()
    await pubsub.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert time.monotonic() - started < 1.0
    assert received == [["x"], [], ["x"], []]
    assert all(s.closed and not s.overflowed for s in subs)
    assert pubsub.subscriber_counts() == {}
    with pytest.raises(ProviderError, match="closed"):
        await pubsub.publish("t0", "late")
    with pytest.raises(ProviderError, match="closed"):
        pubsub.subscribe("t0")
    with pytest.raises(ProviderError, match="closed"):
        await pubsub.check()
    await pubsub.close()  # idempotent
    assert provider_tasks() == []


async def test_no_leaks_after_many_subscribe_close_cycles(make_pubsub: MakePubSub) -> None:
    pubsub = await make_pubsub(PubSubOptions(queue_size=2))
    keep = pubsub.subscribe("kept")
    await ready(keep)
    tasks_before = len(asyncio.all_tasks())

    async def consume(sub: Subscription) -> None:
        try:
            async for _ in sub:
                pass
        finally:
            await sub.close()

    for i in range(1000):
        topic = f"cycle.{i % 7}"
        if i % 3 == 0:
            async with pubsub.subscribe(topic):
                pass
        elif i % 3 == 1:
            sub = pubsub.subscribe(topic)
            await pubsub.publish(topic, i)
            await sub.close()
        else:
            # A consumer that vanishes mid-iteration (its task cancelled).
            task = asyncio.create_task(consume(pubsub.subscribe(topic)))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert pubsub.subscriber_counts() == {"kept": 1}
    assert set(pubsub._topics) == {"kept"}
    assert len(asyncio.all_tasks()) == tasks_before
    await keep.close()
    assert pubsub._topics == {}
    # The provider still works after all that.
    async with pubsub.subscribe("cycle.0") as sub:
        await pubsub.publish("cycle.0", "still works")
        assert await recv(sub) == "still works"
    assert pubsub._topics == {}


def test_subscription_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        QueueSubscription("t", queue_size=0, overflow="drop_oldest")
    with pytest.raises(ValueError, match="unknown overflow policy 'block'"):
        QueueSubscription("t", queue_size=1, overflow="block")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Redis only
# ---------------------------------------------------------------------------


async def test_redis_without_client_fails_clearly(redis_url: str, redis_clients) -> None:
    for app in ({keys.REDIS: None}, {}, None):
        pubsub = RedisPubSub(PubSubOptions(), app=app)
        with pytest.raises(ProviderError) as info:
            await pubsub.start()
        assert str(info.value) == "pubsub: redis needs redis.url (or REDIS_URL)"
        with pytest.raises(ProviderError, match="not started"):
            pubsub.subscribe("t")
        with pytest.raises(ProviderError, match="not started"):
            await pubsub.publish("t", {})
        await pubsub.close()
    assert provider_tasks() == []


async def test_through_the_provider_registry_and_a_real_app(redis_url: str, redis_clients) -> None:
    registry = ProviderRegistry()
    for spec in core_providers():
        registry.add(spec, "core")
    app = web.Application()
    app[keys.REDIS] = None
    with pytest.raises(ProviderError, match=re.escape("redis needs redis.url (or REDIS_URL)")):
        await registry.create("pubsub", "redis", PubSubOptions(), app=app, owner="realtime")
    app[keys.REDIS] = await redis_clients(redis_url)
    memory = await registry.create("pubsub", "memory", PubSubOptions(), app=app, owner="realtime")
    remote = await registry.create("pubsub", "redis", PubSubOptions(), app=app, owner="realtime")
    assert isinstance(memory, MemoryPubSub) and isinstance(remote, RedisPubSub)
    assert await registry.check_all() == {"realtime:pubsub:memory": None, "realtime:pubsub:redis": None}
    sub = remote.subscribe("t")
    await ready(sub)
    await remote.publish("t", {"via": "registry"})
    assert await recv(sub) == {"via": "registry"}
    await registry.close_all()
    assert sub.closed
    assert provider_tasks() == []


async def test_one_pubsub_connection_per_app(make_redis_pubsub: MakePubSub, redis_url: str, redis_clients) -> None:
    pubsub = await make_redis_pubsub()
    subs = [pubsub.subscribe(f"topic.{i % 10}") for i in range(50)]
    await ready(*subs)
    admin = await redis_clients(redis_url)

    async def subscribed_counts() -> list[int]:
        clients = await admin.client_list()
        return sorted(int(c["sub"]) for c in clients if int(c.get("sub", 0)) > 0)

    # One connection holds all ten channels, however many local subscribers.
    assert await subscribed_counts() == [10]
    assert sorted(await admin.pubsub_channels("plugboard:*")) == sorted(
        f"plugboard:topic.{i}".encode() for i in range(10)
    )
    for sub in subs[:45]:
        await sub.close()
    # Topics 5..9 still have a subscriber each; 0..4 were unsubscribed.
    async def remaining() -> list[bytes]:
        return sorted(await admin.pubsub_channels("plugboard:*"))

    expected = sorted(f"plugboard:topic.{i}".encode() for i in range(5, 10))

    async def only_expected() -> bool:
        return await remaining() == expected

    await eventually(only_expected, WAIT, what="only topics 5..9 subscribed on Redis")
    for sub in subs[45:]:
        await sub.close()

    async def none_left() -> bool:
        return not await remaining()

    await eventually(none_left, WAIT, what="no channel left on Redis")
    assert pubsub._topics == {}


async def test_redis_channels_stay_clean_after_many_cycles(make_redis_pubsub: MakePubSub, redis_url: str, redis_clients) -> None:
    pubsub = await make_redis_pubsub()
    admin = await redis_clients(redis_url)
    for i in range(1000):
        sub = pubsub.subscribe(f"churn.{i % 5}")
        if i % 100 == 0:
            assert await sub.wait_ready()
        await sub.close()
    assert pubsub._topics == {}

    async def none_left() -> bool:
        return not await admin.pubsub_channels("plugboard:*")

    await eventually(none_left, WAIT, what="no channel left on Redis")
    link = pubsub._link
    assert link is not None and link.sent == set() and link.unacked == {}


async def test_two_instances_see_each_others_events(make_redis_pubsub: MakePubSub) -> None:
    a = await make_redis_pubsub()
    b = await make_redis_pubsub()
    on_a, on_b = a.subscribe("books.updated.1"), b.subscribe("books.updated.1")
    await ready(on_a, on_b)
    await b.publish("books.updated.1", {"from": "b"})
    assert await recv(on_a) == {"from": "b"}
    assert await recv(on_b) == {"from": "b"}
    await a.publish("books.updated.1", {"from": "a"})
    assert await recv(on_a) == {"from": "a"}
    assert await recv(on_b) == {"from": "a"}
    await on_a.close()
    await on_b.close()


async def test_prefix_separates_apps_and_foreign_messages_are_skipped(
    make_redis_pubsub: MakePubSub, redis_url: str, redis_clients, pubsub_log
) -> None:
    one = await make_redis_pubsub(PubSubOptions(prefix="app1:"))
    two = await make_redis_pubsub(PubSubOptions(prefix="app2:"))
    sub_one, sub_two = one.subscribe("t"), two.subscribe("t")
    await ready(sub_one, sub_two)
    await one.publish("t", "one")
    await two.publish("t", "two")
    assert await recv(sub_one) == "one"
    assert await recv(sub_two) == "two"
    # Anyone can PUBLISH on the channel; non-JSON is logged and skipped.
    raw = await redis_clients(redis_url)
    assert await raw.publish("app1:t", b"\xff not json") == 1
    assert await raw.publish("app1:t", '{"from": "raw"}') == 1
    assert await recv(sub_one) == {"from": "raw"}
    assert len(records(pubsub_log, "ignored a non-JSON event on 't'")) == 1
    assert not sub_one.closed
    await sub_one.close()
    await sub_two.close()


async def test_publish_times_out_instead_of_blocking(make_redis_pubsub: MakePubSub, redis_url: str, redis_clients) -> None:
    pubsub = await make_redis_pubsub(timeout=0.3)
    admin = await redis_clients(redis_url)
    # Redis stops answering every client for a second (as a stuck server would).
    await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    started = time.monotonic()
    with pytest.raises(ProviderError, match="cannot publish to 't': redis unavailable \\(timed out\\)"):
        await pubsub.publish("t", {})
    assert time.monotonic() - started < 1.0
    with pytest.raises(ProviderError, match="does not answer PING"):
        await pubsub.check()
    await asyncio.sleep(1.0)
    # Once Redis answers again the provider works without intervention.
    async with pubsub.subscribe("t") as sub:
        await pubsub.publish("t", "back")
        assert await recv(sub) == "back"
    await pubsub.check()


async def test_subscription_survives_a_redis_restart(redis_clients, pubsub_log) -> None:
    with RedisServer() as server:
        client = await redis_clients(server.url)
        pubsub = RedisPubSub(PubSubOptions(), app={keys.REDIS: client})
        await pubsub.start()
        try:
            sub = pubsub.subscribe("chat.42")
            await ready(sub)
            await pubsub.publish("chat.42", "before")
            assert await recv(sub) == "before"

            # In a thread, so the event loop keeps running (and reconnecting)
            # while the server is down.
            await asyncio.to_thread(server.restart)
            await eventually(lambda: records(pubsub_log, "resubscribed"), what="resubscribe log")
            lost = records(pubsub_log, "redis connection lost")
            assert re.fullmatch(
                r"pubsub: redis connection lost \(.+\); resubscribed 1 channel\(s\) after \d+\.\ds "
                r"\(events published meanwhile were not delivered\)",
                lost[-1].getMessage(),
            ), lost[-1].getMessage()
            await ready(sub)
            await pubsub.publish("chat.42", "after")
            assert await recv(sub) == "after"
            assert not sub.closed and sub.dropped == 0
            await pubsub.check()
        finally:
            await pubsub.close()
    assert provider_tasks() == []


async def test_outage_publish_fails_then_delivery_resumes(redis_clients, pubsub_log) -> None:
    server = RedisServer(port=free_port())
    server.start()
    try:
        client = await redis_clients(server.url)
        pubsub = RedisPubSub(PubSubOptions(), app={keys.REDIS: client}, timeout=1.0)
        await pubsub.start()
        try:
            sub = pubsub.subscribe("notifications.u1")
            await ready(sub)
            await asyncio.to_thread(server.stop)
            await eventually(lambda: not pubsub.connected, what="the provider to notice the outage")

            started = time.monotonic()
            with pytest.raises(ProviderError, match="cannot publish to 'notifications.u1': redis unavailable"):
                await pubsub.publish("notifications.u1", "lost")
            assert time.monotonic() - started < 2.0
            with pytest.raises(ProviderError):
                await pubsub.check()
            # Subscribing during the outage neither blocks nor fails.
            late = pubsub.subscribe("notifications.u2")
            assert await asyncio.wait_for(late.wait_ready(), 1.0) is False
            # A second app cannot start against a dead server.
            other = RedisPubSub(PubSubOptions(), app={keys.REDIS: client}, timeout=1.0)
            with pytest.raises(ProviderError, match="cannot open the redis pub/sub connection"):
                await other.start()
            # Reconnect attempts back off (0.1s doubling, capped at 2s).
            await asyncio.sleep(0.6)
            assert not sub.closed and not late.closed

            await asyncio.to_thread(server.start)
            await eventually(lambda: records(pubsub_log, "resubscribed 2 channel(s)"), what="resubscribe log")
            gap = float(re.search(r"after (\d+\.\d)s", records(pubsub_log, "resubscribed")[-1].getMessage()).group(1))
            assert gap >= 0.6
            assert len(records(pubsub_log, "reconnecting")) == 1
            await ready(sub, late)
            await pubsub.publish("notifications.u1", "after")
            await pubsub.publish("notifications.u2", "late one")
            assert await recv(sub) == "after"
            assert await recv(late) == "late one"
            await pubsub.check()
        finally:
            await pubsub.close()
        assert provider_tasks() == []
    finally:
        server.stop()


async def test_recovers_when_redis_drops_the_connection(
    make_redis_pubsub: MakePubSub, redis_url: str, redis_clients, pubsub_log
) -> None:
    pubsub = await make_redis_pubsub()
    admin = await redis_clients(redis_url)
    sub = pubsub.subscribe("t")
    await ready(sub)
    # The server (or a proxy, or an admin) cuts the pub/sub connection only.
    assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
    await eventually(lambda: records(pubsub_log, "resubscribed 1 channel(s)"), what="resubscribe log")
    await ready(sub)
    await pubsub.publish("t", "again")
    assert await recv(sub) == "again"
    assert not sub.closed
