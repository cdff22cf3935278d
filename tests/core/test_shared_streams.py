"""Subscribers with equal operation, variables and identity share one execution per event."""

from __future__ import annotations

import asyncio

import pytest

from core_testkit import make_plugin
from plugboard import keys
from plugboard.graphql.context import Context
from plugboard.graphql.operation import Operation
from plugboard.graphql.shared_streams import EncodeOnce


class Feed:
    """A subscription source the test drives: counts generators and executions."""

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue] = []
        self.started = 0
        self.finished = 0
        self.executions = 0

    def plugin(self):
        feed = self

        async def ticks(parent, args, context, info):
            feed.started += 1
            queue: asyncio.Queue = asyncio.Queue()
            feed.queues.append(queue)
            try:
                while True:
                    yield {"tick": await queue.get()}
            finally:
                feed.queues.remove(queue)
                feed.finished += 1

        async def resolve_tick(parent, args, context, info):
            feed.executions += 1
            return parent["tick"]

        return make_plugin(
            "feed",
            plugboard_schema=lambda: "extend type Subscription { tick: Int }",
            plugboard_subscriptions=lambda: {"Subscription.tick": ticks},
            plugboard_resolvers=lambda: {"Subscription.tick": resolve_tick},
        )

    def publish(self, value: int) -> None:
        for queue in self.queues:
            queue.put_nowait(value)


@pytest.fixture
async def started(make_app, aiohttp_client):
    async def start(data=None):
        feed = Feed()
        app = make_app(data, plugins=[feed.plugin()])
        # These tests count resolver calls, which the kit's differential mode
        # doubles (each event also runs on Tartiflette's executor).
        app[keys.ENGINE].compare_executors = False
        await aiohttp_client(app)  # runs start-up: the engine is cooked
        return app, feed

    return start


async def subscribe(app, identity=None, share=True):
    context = Context(app=app, request=None, request_id="t", transport="test")
    context.identity = identity
    if not share:
        context.share_subscriptions = False
    op = Operation(query="subscription { tick }", variables=None, operation_name=None, extensions=None, context=context, transport="test")
    runner = app[keys.RUNNER]
    runner.prepare(op, allowed_types=("subscription",))
    return await runner.subscribe(op)


async def next_result(stream):
    return await asyncio.wait_for(stream.__anext__(), 2)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_execution_per_event_for_a_group(started):
    app, feed = await started()
    streams = [await subscribe(app) for _ in range(50)]
    await settle()
    assert feed.started == 1
    feed.publish(7)
    assert [await next_result(s) for s in streams] == [{"data": {"tick": 7}}] * 50
    assert feed.executions == 1
    for s in streams:
        await s.aclose()
    await settle()
    assert feed.finished == 1 and len(app[keys.RUNNER].shared) == 0


async def test_identities_do_not_share(started):
    app, feed = await started()
    alice, bob, anon = await subscribe(app, "alice"), await subscribe(app, "bob"), await subscribe(app)
    await settle()
    assert feed.started == 3
    feed.publish(1)
    for s in (alice, bob, anon):
        assert await next_result(s) == {"data": {"tick": 1}}
    assert feed.executions == 3


async def test_source_stays_while_members_remain(started):
    app, feed = await started()
    first, second = await subscribe(app), await subscribe(app)
    await settle()
    await first.aclose()
    await settle()
    assert feed.finished == 0
    feed.publish(2)
    assert await next_result(second) == {"data": {"tick": 2}}
    await second.aclose()
    await settle()
    assert feed.finished == 1


async def test_slow_member_drops_oldest(started):
    app, feed = await started({"graphql": {"subscription_buffer": 3}})
    slow, fast = await subscribe(app), await subscribe(app)
    await settle()
    for value in range(10):
        feed.publish(value)
        assert (await next_result(fast))["data"]["tick"] == value
    assert [(await next_result(slow))["data"]["tick"] for _ in range(3)] == [7, 8, 9]
    assert slow.dropped == 7 and fast.dropped == 0


async def test_opting_out(started):
    app, feed = await started()
    a, b = await subscribe(app, share=False), await subscribe(app, share=False)
    # Unshared streams start when first read, as Tartiflette's do.
    pending = [asyncio.ensure_future(next_result(s)) for s in (a, b)]
    await settle()
    feed.publish(3)
    assert await asyncio.gather(*pending) == [{"data": {"tick": 3}}] * 2
    assert feed.started == 2 and feed.executions == 2
    app2, feed2 = await started({"graphql": {"share_subscriptions": False}})
    c, d = await subscribe(app2), await subscribe(app2)
    pending = [asyncio.ensure_future(next_result(s)) for s in (c, d)]
    await settle()
    feed2.publish(4)
    await asyncio.gather(*pending)
    assert feed2.started == 2 and app2[keys.RUNNER].shared is None
    for s in (a, b, c, d):
        await s.aclose()


def test_encode_once_encodes_each_result_object_once():
    calls = []

    def dumps(value):
        calls.append(value)
        return repr(value)

    encode = EncodeOnce(dumps)
    shared = {"data": {"tick": 1}}
    # The members of a group get one object after another: encoded once.
    assert [encode(shared) for _ in range(3)] == ["{'data': {'tick': 1}}"] * 3
    # An equal but distinct object (a result of another group) is encoded again.
    assert encode({"data": {"tick": 1}}) == "{'data': {'tick': 1}}"
    assert encode(None) == "None"
    assert len(calls) == 3
