"""Hostile documents against a running server: how fast each is refused, and what a normal client sees meanwhile.

A ``plugboard serve`` with the books example (default settings: the
``graphql.limits`` on) runs pinned to CPU 0; this script runs on CPU 1. A
probe client asks a normal query (``{ books(first: 20) { id title author {
id name } } }``) back to back, one request at a time: first alone (idle p99),
then while an attacker sends one hostile document after another, also back to
back. For each hostile document it reports the refusal's round trip on
loopback (the server's time to read and refuse it, the body upload included),
its status and code, and the probe's p99 under that attack.

Targets (issue 9): every refusal under 50 ms; the probe's p99 under attack
below 2x its idle p99.

    python bench/hostile.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

PYTHON = sys.executable
TOKEN = "hostile-operator"
NORMAL = "{ books(first: 20) { id title author { id name } } }"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/graphql-response+json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(query: str, **extra) -> bytes:
    return json.dumps({"query": query, **extra}).encode()


def hostile() -> list[tuple[str, bytes]]:
    """The review's probes (issue 9, findings 1, 3 and 6), as request bodies."""
    deep_books = "id"
    for _ in range(10):
        deep_books = f"books {{ title author {{ name {deep_books} }} }}"
    deep = []
    for i in range(3_999):
        deep.append("books {" if i % 2 == 0 else "author {")
    levels = 18
    laughs = [f"fragment F{i} on Author {{ books {{ author {{ ...F{i + 1} }} }} more: books {{ author {{ ...F{i + 1} }} }} }}" for i in range(levels)]
    laughs.append(f"fragment F{levels} on Author {{ name }}")
    return [
        ("10,000 fragments each spread once (508 KB)", body("{ books { " + " ".join(f"...F{i}" for i in range(10_000)) + " } } " + " ".join(f"fragment F{i} on Book {{ id }}" for i in range(10_000)))),
        ("depth 4,000 (30 KB)", body("{ " + " ".join(deep) + " id " + "} " * 3_999 + "}")),
        ("40,000 aliases (~900 KB)", body("{ " + " ".join(f"a{i}: books {{ id }}" for i in range(40_000)) + " }")),
        ("2,000 books aliases", body("{ " + " ".join(f"b{i}: books {{ id title }}" for i in range(2_000)) + " }")),
        ("books/author nested 10 times", body("{ authors { " + deep_books + " } }")),
        ("fragments spread twice per level, 18 levels", body("{ books { author { ...F0 } } } " + " ".join(laughs))),
        ("body of 50,000 '['", b"[" * 50_000),
        ("variables nested 100 deep", body("query ($v: ID!) { book(id: $v) { id } }", variables={"v": json.loads("[" * 100 + "]" * 100)})),
        ("variables nested 50,000 deep", b'{"query": "query ($v: ID!) { book(id: $v) { id } }", "variables": {"v": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"),
    ]


async def probe(session: aiohttp.ClientSession, url: str, seconds: float) -> list[float]:
    latencies = []
    payload = body(NORMAL)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        async with session.post(url, data=payload, headers=JSON_HEADERS) as resp:
            await resp.read()
            assert resp.status == 200
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def attack(session: aiohttp.ClientSession, url: str, payload: bytes, stop: asyncio.Event) -> tuple[list[float], int, str]:
    times, status, code = [], 0, ""
    while not stop.is_set():
        started = time.perf_counter()
        async with session.post(url, data=payload, headers=JSON_HEADERS) as resp:
            raw = await resp.read()
        times.append((time.perf_counter() - started) * 1000)
        status = resp.status
        try:
            error = json.loads(raw)["errors"][0]
            code = (error.get("extensions") or {}).get("code") or error["message"][:40]
        except (ValueError, KeyError, IndexError, TypeError):
            code = raw[:40].decode(errors="replace")
    return times, status, code


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


async def run(url: str, seconds: float) -> None:
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session:
        await probe(session, url, 1.0)  # warm-up
        idle = await probe(session, url, seconds)
        idle_p99 = p99(idle)
        print(f"idle: {len(idle)} normal queries, median {statistics.median(idle):.2f} ms, p99 {idle_p99:.2f} ms\n")
        print("| hostile request | status, code | refusal round trip median / max ms | normal query p99 under attack ms | ratio to idle p99 |")
        print("|---|---|---|---|---|")
        rows = []
        for name, payload in hostile():
            stop = asyncio.Event()
            attacker = asyncio.create_task(attack(session, url, payload, stop))
            under = await probe(session, url, seconds)
            stop.set()
            times, status, code = await attacker
            ratio = p99(under) / idle_p99
            rows.append((name, max(times), ratio))
            print(f"| {name} | {status} {code} | {statistics.median(times):.1f} / {max(times):.1f} | {p99(under):.2f} | {ratio:.2f} |")
        worst_refusal = max(r[1] for r in rows)
        worst_ratio = max(r[2] for r in rows)
        print(f"\nslowest refusal: {worst_refusal:.1f} ms (target < 50); worst p99 ratio: {worst_ratio:.2f} (target < 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="probe time idle and under each attack")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="plugboard-hostile-"))
    (root / "settings.yaml").write_text(json.dumps({"plugins": ["books"], "server": {"data_dir": "var", "admin_token": TOKEN}}))
    port = free_port()
    env = dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING")
    cmd = ["taskset", "-c", "0", PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.sched_setaffinity(0, {1})
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        asyncio.run(_seed(url, f"http://127.0.0.1:{port}/readyz"))
        asyncio.run(run(url, args.seconds))
    finally:
        server.terminate()
        _, err = server.communicate(timeout=15)
        tracebacks = err.decode(errors="replace").count("Traceback")
        print(f"server log: {tracebacks} tracebacks")


async def _seed(url: str, ready: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(ready) as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        create = "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a}) { id } }"
        for i in range(20):
            async with session.post(url, data=body(create, variables={"t": f"Book {i}", "a": f"Author {i % 5}"}), headers={**JSON_HEADERS, "Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200, await resp.text()


if __name__ == "__main__":
    main()
