"""The cache plugin's throughput: hits from memory and Redis, misses, against a raw handler and cache off.

One command, one run, every side: each side's server is started once,
pinned to CPU 0 with uvloop, and loaded in turn by wrk pinned to CPU 1
(Redis, when used, also on CPU 1) with the peer fixture query (``{
books(first: 20) { id title author { id name } } }``, POST JSON, 64
connections). Each round loads every side once; a side's ratio is the
median of its per-round ratios to its baseline.

Sides:

- ``raw``: a bare aiohttp handler returning the precomputed response body;
- ``hit-memory``: books + cache, ``services.cache: memory``, every request a hit;
- ``hit-redis``: the same on ``services.cache: redis``;
- ``off`` / ``miss``: books without / with the cache (memory, shipped
  bounds), each request with a different variable so every request is a
  miss: ``after`` is a distinct string that books reads as ``0``
  (whitespace, then ``0``: Python's ``int()`` strips the whitespace), so
  every response holds the same 20 books and 39 tags as the hit sides. The
  script stops wrk on any response with ``errors``, and a probe before each
  run checks ``X-Cache: MISS`` and the 20 books. ``miss`` is measured in the
  steady state of such traffic: the store is filled first (at least
  ``max_entries`` misses, checked), so each new key is a full store's first
  miss of it, which admission turns away (plugins/cache/providers/memory.py);
- ``miss-filling``: the same misses on an empty store too large to fill
  during the run (a million entries, 4 GB), so every miss is computed,
  tagged and stored: what the store costs while it fills;
- ``miss-small`` (the store bounded to 200 entries) and ``miss-noqc`` (the
  plugin loaded, ``queryCache.enabled: false``): on request.

    python bench/cache.py [--duration 3] [--rounds 12] [--connections 64] [--sides raw,off,miss] [--together]

With ``--together``, more rounds follow in which each side and its baseline
are loaded at the same time (:func:`load_together`): far steadier on a noisy
machine, though it understates what the heavier side loses to cache effects
(two processes take turns on one CPU), so the in-turn figure stays the one
the targets name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_books import PYTHON, QUERY, free_port, measure, post, seed_books, start, stop, wait_ready, wrk  # noqa: E402
from versions import print_report  # noqa: E402

#: books' mutations need an identity or the operator's token (seeding only).
OPERATOR = "bench-operator"

MISS_QUERY = "query($a: ID) { books(first: 20, after: $a) { id title author { id name } } }"
TARGETS = {"hit-memory": ("raw", 0.5), "hit-redis": ("raw", 0.3), "miss": ("off", 0.95), "miss-filling": ("off", None), "miss-noqc": ("off", None)}


def serve_raw(port: int, body_file: str) -> None:
    """A minimal aiohttp server answering every POST with the precomputed body."""
    import uvloop
    from aiohttp import web

    body = Path(body_file).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/graphql", handler)
    app.router.add_get("/readyz", lambda r: web.Response(text="ok"))
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def load_together(servers: dict, pair: tuple[str, str], duration: int, connections: int, script_of) -> float:
    """Load two sides' servers at the same time, half the connections each: the ratio of their throughputs.

    Both servers are pinned to CPU 0 and always have work queued, so the
    scheduler gives each half of it: the ratio is that of their CPU cost per
    request, and whatever slows the machine at that moment slows both alike.
    Sequential rounds on a shared machine whose speed swings by 20% within
    seconds cannot tell a few points apart; this can (its noise, measured with
    two equal servers: 1-3%).
    """
    rps: dict[str, float] = {}

    def load(side: str) -> None:
        rps[side] = wrk(servers[side][1], duration, connections // 2, script_of(side))[0]

    threads = [threading.Thread(target=load, args=(side,)) for side in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rps[pair[0]] / rps[pair[1]]


def settings_for(side: str, redis_url: str | None) -> dict:
    plugins = ["books"] if side == "off" else ["books", "cache"]
    data: dict = {"plugins": plugins, "server": {"data_dir": "var", "admin_token": OPERATOR}}
    if side == "hit-redis":
        data["redis"] = {"url": redis_url}
        data["services"] = {"cache": {"provider": "redis"}}
        data["cache"] = {"redis": {"enabled": True}}
    elif side == "miss-small":
        data["services"] = {"cache": {"provider": "memory", "max_entries": 200}}
    elif side == "miss-filling":
        data["services"] = {"cache": {"provider": "memory", "max_entries": 1_000_000, "max_bytes": "4GB"}}
    elif side == "miss-noqc":
        data["cache"] = {"queryCache": {"enabled": False}}
    elif side != "off":
        data["services"] = {"cache": {"provider": "memory"}}
    return data


def scripts(root: Path) -> dict[str, Path]:
    fixed = root / "fixed.lua"
    fixed.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps({'query': QUERY}))}\n"
    )
    varying = root / "varying.lua"
    prefix = json.dumps({"query": MISS_QUERY})[:-1] + ', "variables": {"a": "'
    varying.write_text(
        # A distinct `after` per request that books still reads as 0: the
        # counter in base 5 written with JSON-escaped whitespace, then "0".
        # Distinct across wrk runs too (the warm-up must not prime the measured run).
        'local ws = {" ", "\\\\t", "\\\\n", "\\\\r", "\\\\f"}\n'
        "counter = (os.time() % 100000) * 100000\n"
        "local function blank(n)\n"
        "  local s = ''\n"
        "  repeat s = s .. ws[n % 5 + 1]; n = math.floor(n / 5) until n == 0\n"
        "  return s\n"
        "end\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f"  local body = {json.dumps(prefix)} .. blank(counter) .. '0\"}}}}'\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)\n'
        "end\n"
        # A GraphQL error would make every request an uncacheable miss and
        # measure the error path instead: stop the run.
        "response = function(status, headers, body)\n"
        "  if string.find(body, '\"errors\"', 1, true) then\n"
        "    io.stderr:write(body)\n"
        "    os.exit(3)\n"
        "  end\n"
        "end\n"
    )
    return {"fixed": fixed, "varying": varying}


def probe(url: str, *, cached: bool) -> None:
    """One request as the varying script sends them: the 20 books, no errors, and a miss that was stored."""
    import urllib.request

    data = json.dumps({"query": MISS_QUERY, "variables": {"a": " \t\n0"}}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body, x_cache = json.loads(resp.read()), resp.headers.get("X-Cache")
    assert "errors" not in body and len(body["data"]["books"]) == 20, body
    assert x_cache == ("MISS" if cached else None), f"X-Cache: {x_cache}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sides", default="raw,hit-memory,hit-redis,off,miss,miss-filling")
    parser.add_argument("--together", action="store_true", help="then also load each side with its baseline at the same time (see load_together)")
    parser.add_argument("--serve-raw", nargs=2, metavar=("PORT", "BODY_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        serve_raw(int(args.serve_raw[0]), args.serve_raw[1])
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    from plugboard.plugins.cache.providers.memory import MemoryCacheConfig
    from plugboard.testing_servers import RedisServer

    sides = args.sides.split(",")
    root = Path(tempfile.mkdtemp(prefix="plugboard-bench-cache-"))
    lua = scripts(root)
    env = dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING")
    env.pop("REDIS_URL", None)
    redis_server = RedisServer().start()
    # Redis shares CPU 1 with wrk: the server under test keeps CPU 0 to itself.
    subprocess.run(["taskset", "-p", "-c", "1", str(redis_server.process.pid)], check=True, capture_output=True)
    results: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
    together: dict[str, list[float]] = {side: [] for side in TARGETS}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}

    def script_of(side: str) -> Path:
        return lua["varying"] if side.startswith(("off", "miss")) else lua["fixed"]

    try:
        (root / "settings.yaml").write_text(json.dumps(settings_for("off", None)))
        port = free_port()
        seed = start([PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], "0", env)
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        seed_books(f"http://127.0.0.1:{port}/graphql", {"Authorization": f"Bearer {OPERATOR}"})
        body = json.dumps(post(f"http://127.0.0.1:{port}/graphql", QUERY), separators=(",", ":")).encode()
        stop(seed)
        (root / "body.json").write_bytes(body)
        # Every side's server stays up for the whole run (idle ones cost
        # nothing) and rounds load them in turn, so a round's ratio pairs runs
        # seconds apart: on a shared machine whose speed drifts by half
        # within minutes, that is what keeps the ratios steady.
        for side in sides:
            port = free_port()
            if side == "raw":
                cmd = [PYTHON, __file__, "--serve-raw", str(port), str(root / "body.json")]
            else:
                home = root / side
                home.mkdir()
                (home / "var").symlink_to(root / "var")  # one seeded database for all
                (home / "settings.yaml").write_text(json.dumps(settings_for(side, redis_server.url)))
                cmd = [PYTHON, "-m", "plugboard.cli", "serve", "--root", str(home), "--port", str(port)]
            servers[side] = (start(cmd, "0", env), f"http://127.0.0.1:{port}/graphql")
            wait_ready(f"http://127.0.0.1:{port}/readyz")
        for side, (proc, url) in servers.items():
            check = post(url, QUERY)
            assert len(check["data"]["books"]) == 20, check
            if side.startswith(("off", "miss")):
                probe(url, cached=side not in ("off", "miss-noqc"))
            rps, _ = wrk(url, 2, args.connections, script_of(side))  # warm-up
            if side == "miss":
                # Fill the store (shipped bounds): 20% more misses than it holds, at the warm-up's rate.
                size = MemoryCacheConfig().max_entries
                fill = int(size * 1.2 / rps) + 1
                filled, _ = wrk(url, fill, args.connections, script_of(side))
                assert 2 * rps + fill * filled >= size, (rps, fill, filled)
        for _ in range(args.rounds):
            for side, (proc, url) in servers.items():
                results[side].append(measure(proc, url, args.duration, args.connections, script_of(side)))
        if args.together:
            for _ in range(args.rounds):
                for side, (base, _target) in TARGETS.items():
                    if side in servers and base in servers and side != base:
                        together[side].append(load_together(servers, (side, base), args.duration, args.connections, script_of))
    finally:
        for proc, _ in servers.values():
            stop(proc)
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)

    print_report(["SQLAlchemy", "aiosqlite", "redis", "hiredis", "plugboard-books"], redis=True)
    print("wrk:", subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip())
    print("| side | req/s (median) | p99 ms (median) | server CPU us/request (median) | req/s each round |")
    print("|---|---|---|---|---|")
    for side, rs in results.items():
        rps = statistics.median(r[0] for r in rs)
        p99 = statistics.median(r[1] for r in rs)
        cpu = statistics.median(r[2] for r in rs)
        print(f"| {side} | {rps:.0f} | {p99:.1f} | {cpu:.0f} | {', '.join(f'{r[0]:.0f}' for r in rs)} |")
    print(f"\n{args.rounds} rounds x {args.duration}s, {args.connections} connections")
    for side, (base, target) in TARGETS.items():
        if side in results and base in results:
            ratios = [a[0] / b[0] for a, b in zip(results[side], results[base])]
            cpu = statistics.median(b[2] for b in results[base]) / statistics.median(a[2] for a in results[side])
            goal = f"; target >= {target}" if target else ""
            print(
                f"{side}/{base}: throughput {statistics.median(ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}{goal}); "
                f"by server CPU per request {cpu:.2f}"
            )
    for side, ratios in together.items():
        if ratios:
            print(
                f"{side}/{TARGETS[side][0]}, loaded together on one CPU: throughput {statistics.median(ratios):.3f} "
                f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})"
            )
    print("raw:", json.dumps(results))


if __name__ == "__main__":
    main()
