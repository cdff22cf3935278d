"""Baseline: a bare aiohttp-sse broadcast of the same payload to every connected client.

    python bench/fanout/baseline_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop
from aiohttp import web
from aiohttp_sse import sse_response

CLIENTS = web.AppKey("clients", set)


async def events(request: web.Request) -> web.StreamResponse:
    queue: asyncio.Queue = asyncio.Queue(maxsize=256)
    request.app[CLIENTS].add(queue)
    try:
        async with sse_response(request) as resp:
            while True:
                data = await queue.get()
                await resp.send(data, event="next")
    finally:
        request.app[CLIENTS].discard(queue)
    return resp


async def publish(request: web.Request) -> web.Response:
    body = await request.json()
    data = json.dumps({"data": {"tick": {"seq": body["seq"], "sent": time.time()}}})
    for queue in request.app[CLIENTS]:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(data)
    return web.json_response({"ok": True})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"clients": len(request.app[CLIENTS])})


def main() -> None:
    uvloop.install()
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_get("/events", events)
    app.router.add_post("/bench/publish", publish)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, backlog=8192)


if __name__ == "__main__":
    main()
