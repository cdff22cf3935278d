"""A plugin's own CPU cost per request: several app configurations served from one process, measured in alternating batches.

wrk against one server at a time (bench/protection.py, bench/cache.py) is
what the issues' targets are stated in, but on a shared machine books alone
swings by more than a plugin's whole cost between rounds. Here every side is
an app in the same process and event loop (uvloop), on its own loopback
port; a small HTTP/1.1 client in that process sends the peer fixture query
(``{ books(first: 20) { id title author { id name } } }``, POST JSON, 16
keep-alive connections) in batches of ``--batch`` requests, side after side,
``--rounds`` times. Each batch's process CPU time per request includes the
client's share, the same for every side, so the difference between two
sides is the cost of what differs between them, and machine noise hits both
alike. Medians over rounds; ``delta`` against the first side.

Presets (``--preset``):

- ``protection``: the peers' in-memory ``library`` plugin alone, with
  protection on its defaults (memory store, a request limit no run
  reaches), and with its Prometheus metrics on;
- ``cache``: a bare aiohttp handler returning the precomputed body, against
  books + cache with every request a hit from memory;
- ``cache-miss``: books alone and books + cache, every request with a new
  ``after`` (as in bench/cache.py) so every lookup misses and is stored.
  Books' SQLite thread makes these batches swing more than the others'.

    python bench/plugin_cost.py [--preset protection|cache|cache-miss] [--rounds 8] [--batch 1000]

Pin it to one CPU (``taskset -c 0``) so the batches share one core's caches.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/email.py would shadow the standard library's email package (aiohttp
# imports it): the real one first, then this folder back for the helpers.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import email.message  # noqa: E402,F401

sys.path[:0] = [str(HERE), str(HERE / "peers")]

from http_books import QUERY, post, seed_books  # noqa: E402
from versions import print_report  # noqa: E402

BODY = json.dumps({"query": QUERY}).encode()
LIMIT = {"requests": {"max": 100_000_000, "window_ms": 60_000}}
BOOKS = {"allow_anonymous_mutations": True}
PRESETS: dict[str, dict[str, Any]] = {
    "protection": {
        "off": {"plugins": ["library"]},
        "protection": {"plugins": ["library", "protection"], "protection": LIMIT},
        "protection+metrics": {"plugins": ["library", "protection"], "protection": {**LIMIT, "metrics": {"enabled": True}}},
    },
    "cache": {
        "raw": "raw",
        "hit-memory": {"plugins": ["books", "cache"], "books": BOOKS, "services": {"cache": {"provider": "memory"}}},
    },
    "cache-miss": {
        "off": {"plugins": ["books"], "books": BOOKS},
        "miss": {"plugins": ["books", "cache"], "books": BOOKS, "services": {"cache": {"provider": "memory"}}},
    },
}
#: Presets whose requests each send a new ``after`` (so every cache lookup misses).
VARYING = {"cache-miss"}
MISS_QUERY = "query($a: ID) { books(first: 20, after: $a) { id title author { id name } } }"
_WHITESPACE = (" ", "\\t", "\\n", "\\r", "\\f")


def varying_body(n: int) -> bytes:
    """The miss query with an ``after`` that books reads as 0 and no other request sends: ``n`` in base 5 written as JSON-escaped whitespace, then ``0``."""
    blank = ""
    while True:
        blank += _WHITESPACE[n % 5]
        n //= 5
        if not n:
            break
    return json.dumps({"query": MISS_QUERY})[:-1].encode() + b', "variables": {"a": "' + blank.encode() + b'0"}}'


_sent = itertools.count(int(time.time()) % 100_000 * 100_000)


def request_bytes(port: int, body: bytes) -> bytes:
    head = f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def client(port: int, requests: int, varying: bool = False) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = request_bytes(port, BODY)
    try:
        for _ in range(requests):
            # Built for every side alike, so the client's share stays equal.
            varied = request_bytes(port, varying_body(next(_sent)))
            writer.write(varied if varying else request)
            headers = (await reader.readuntil(b"\r\n\r\n")).lower()
            start = headers.index(b"content-length:") + 15
            length = int(headers[start : headers.index(b"\r\n", start)])
            await reader.readexactly(length)
    finally:
        writer.close()


async def serve(settings: Any, root: str, raw_body: bytes | None) -> tuple[Any, int]:
    from aiohttp import web

    from plugboard.testing import make_app

    if settings == "raw":
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=raw_body, content_type="application/json")

        app = web.Application()
        app.router.add_post("/graphql", handler)
    else:
        app = make_app(settings, root=root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def seed(port: int, settings: dict) -> bytes:
    """Books' rows when it is loaded; the query's response body, checked."""
    url = f"http://127.0.0.1:{port}/graphql"
    # http_books' helpers block: in a thread, so this loop keeps serving them.
    if "books" in settings.get("plugins", []):
        await asyncio.to_thread(seed_books, url)
    answer = await asyncio.to_thread(post, url, QUERY)
    assert len(answer["data"]["books"]) == 20, answer
    # The varying query must answer the same books, not an error (an error is never cached: it would measure the error path).
    varied = json.loads(varying_body(next(_sent)))
    missed = await asyncio.to_thread(post, url, varied["query"], varied["variables"])
    assert missed == answer, missed
    return json.dumps(answer, separators=(",", ":")).encode()


async def main(preset: str, rounds: int, batch: int, connections: int) -> None:
    import gc

    sides = PRESETS[preset]
    varying = preset in VARYING
    servers: dict[str, tuple[Any, int]] = {}
    raw_body = None
    for name, settings in sides.items():
        if settings != "raw":
            servers[name] = await serve(settings, tempfile.mkdtemp(prefix="plugboard-bench-cost-"), None)
            raw_body = await seed(servers[name][1], settings)
    for name, settings in sides.items():
        if settings == "raw":
            servers[name] = await serve(settings, "", raw_body)
    # What `plugboard serve` does once started (core/cli.py).
    from plugboard.cli import GC_YOUNG_THRESHOLD

    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    per = batch // connections
    for _name, (_, port) in servers.items():  # warm-up
        await asyncio.gather(*(client(port, 50, varying) for _ in range(connections)))
    samples: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, (_, port) in servers.items():
            started = time.process_time()
            await asyncio.gather(*(client(port, per, varying) for _ in range(connections)))
            samples[name].append((time.process_time() - started) / (per * connections) * 1e6)
    first = statistics.median(next(iter(samples.values())))
    print("| side | CPU us/request (median, client included) | delta | min | max |")
    print("|---|---:|---:|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median - first:+.1f} | {min(values):.1f} | {max(values):.1f} |")
    for runner, _ in servers.values():
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="protection")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    # The planned executor alone (the test kit's default also runs Tartiflette's to compare).
    os.environ.setdefault("PLUGBOARD_TEST_EXECUTOR", "planned")
    os.environ.setdefault("PLUGBOARD_LOG_LEVEL", "WARNING")
    print_report(["SQLAlchemy", "aiosqlite", "plugboard-books", "limits", "prometheus-client"])
    import uvloop

    uvloop.run(main(args.preset, args.rounds, args.batch, args.connections))
