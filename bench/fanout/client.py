"""Fan-out benchmark client: N subscribers in one process, latency per delivery.

    python bench/fanout/client.py URL MODE COUNT
MODE: ws (graphql-transport-ws), sse (graphql-sse distinct connections), baseline (plain SSE).
Prints "ready" once every subscriber is connected; on a line "report N" on stdin
it waits (up to 60 s) until every subscriber has events 0..N-1, then prints one JSON line {"latencies": {seq: [seconds, ...]}} and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import uvloop

QUERY = "subscription { tick }"


async def ws_subscriber(session, url, record, ready):
    async with session.ws_connect(url.replace("http", "ws") + "/graphql", protocols=("graphql-transport-ws",), heartbeat=None, max_msg_size=0) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        await ws.receive_json()
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": QUERY}})
        ready()
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("type") == "next":
                record(data["payload"]["data"]["tick"])


async def sse_subscriber(session, url, record, ready, baseline):
    if baseline:
        ctx = session.get(url + "/events", headers={"Accept": "text/event-stream"})
    else:
        ctx = session.post(url + "/graphql", json={"query": QUERY}, headers={"Accept": "text/event-stream"})
    async with ctx as resp:
        assert resp.status == 200, resp.status
        ready()
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk.replace(b"\r\n", b"\n")  # aiohttp-sse separates lines with CRLF
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                for line in block.split(b"\n"):
                    if line.startswith(b"data: ") or line.startswith(b"data:"):
                        payload = json.loads(line.split(b":", 1)[1])
                        record(payload["data"]["tick"])


async def main() -> None:
    url, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    latencies: dict[int, list[float]] = {}
    connected = 0

    def record(tick):
        latencies.setdefault(tick["seq"], []).append(time.time() - tick["sent"])

    def ready():
        nonlocal connected
        connected += 1

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as session:
        tasks = []
        for i in range(count):
            if mode == "ws":
                tasks.append(asyncio.create_task(ws_subscriber(session, url, record, ready)))
            else:
                tasks.append(asyncio.create_task(sse_subscriber(session, url, record, ready, mode == "baseline")))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # do not flood the accept queue
        while connected < count:
            await asyncio.sleep(0.05)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        expected = int((await loop.run_in_executor(None, sys.stdin.readline)).split()[1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(len(latencies.get(seq, ())) < count for seq in range(expected)):
            await asyncio.sleep(0.01)
        print(json.dumps({"latencies": latencies}), flush=True)
        for t in tasks:
            t.cancel()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
