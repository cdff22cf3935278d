"""Benchmark plugin: a `tick` subscription fed by the pubsub topic `bench.tick`,
and POST /bench/publish to publish one event (payload carries its send time)."""

from __future__ import annotations

import time

from aiohttp import web

from plugboard import hookimpl, keys


@hookimpl
def plugboard_schema():
    return "extend type Subscription { tick: JSON }"


async def tick(parent, args, context, info):
    async with context.app[keys.PUBSUB].subscribe("bench.tick") as events:
        async for payload in events:
            yield {"tick": payload}


@hookimpl
def plugboard_subscriptions():
    return {"Subscription.tick": tick}


async def publish(request: web.Request) -> web.Response:
    body = await request.json()
    await request.app[keys.PUBSUB].publish("bench.tick", {"seq": body["seq"], "sent": time.time()})
    return web.json_response({"ok": True})


@hookimpl
def plugboard_routes():
    return [web.post("/bench/publish", publish)]
