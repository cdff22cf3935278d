"""The protection plugin's cost on the books benchmark, and the latency of one limit check.

Sides (each server alone on CPU 0 with uvloop, wrk on CPU 1, Redis on CPU 1;
the books query ``{ books(first: 20) { id title author { id name } } }``,
POST JSON, 64 connections; rounds alternate the sides, medians kept):

- ``off``: books alone;
- ``memory``: books + protection with its defaults (request limit, depth
  and cost step; metrics off, as without ``server.admin_token``),
  ``services.ratelimit: memory``, a limit no run reaches;
- ``redis``: the same on ``services.ratelimit: redis``;
- ``memory-metrics``: ``memory`` with Prometheus metrics on;
- diagnostics, on request: ``memory-nocost``, ``memory-nolimits`` (one
  part of the plugin off).

Then, in process, the latency of ``store.hit`` alone (p50, p99) on each store.

    python bench/protection.py [--duration 10] [--rounds 3] [--connections 64] [--checks 5000]
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/email.py would shadow the standard library's email package (urllib
# and aiohttp import it): import the real one first, then put this folder
# back for the sibling helpers.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import email.message  # noqa: E402,F401
import urllib.request  # noqa: E402,F401

sys.path.insert(0, str(HERE))

from http_books import PYTHON, QUERY, free_port, measure, post, seed_books, stop, wait_ready, wrk  # noqa: E402

_LOGS: list = []


def start(cmd: list[str], cpu: str, env: dict | None = None) -> subprocess.Popen:
    # Server output to a file, not http_books' undrained pipe: aiohttp logs a
    # traceback for each request wrk cuts off at the end of a run, and once
    # the pipe's 64 KB are full the server blocks writing (0 req/s).
    log = tempfile.TemporaryFile()
    _LOGS.append(log)
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=log)


def scripts(root: Path) -> dict[str, Path]:
    fixed = root / "fixed.lua"
    fixed.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps({'query': QUERY}))}\n"
    )
    return {"fixed": fixed}


def versions() -> str:
    from importlib.metadata import version

    parts = [f"Python {sys.version.split()[0]}"]
    for dist in ("aiohttp", "tartiflette", "redis", "uvloop", "limits", "prometheus-client"):
        parts.append(f"{dist} {version(dist)}")
    return ", ".join(parts)

TARGETS = {"memory": 0.95, "redis": 0.85}


def settings_for(side: str, redis_url: str | None) -> dict:
    # The seeding mutations run anonymously.
    books = {"allow_anonymous_mutations": True}
    if side == "off":
        return {"plugins": ["books"], "server": {"data_dir": "var"}, "books": books}
    store, _, variant = side.partition("-")
    protection: dict = {"requests": {"max": 100_000_000, "window_ms": 60_000}}
    # memory-metrics: with Prometheus metrics, which are off by default here
    # (no server.admin_token: nobody could scrape them). Diagnostic sides:
    # memory-nocost, memory-nolimits (one part off).
    if variant == "metrics":
        protection["metrics"] = {"enabled": True}
    elif variant == "nocost":
        protection["graphql"] = {"max_complexity": 0, "max_depth": 0}
    elif variant == "nolimits":
        protection["requests"] = {"enabled": False}
    elif variant:
        raise SystemExit(f"unknown side {side!r}")
    data: dict = {
        "plugins": ["books", "protection"],
        "server": {"data_dir": "var"},
        "books": books,
        "protection": protection,
        "services": {"ratelimit": {"provider": store}},
    }
    if store == "redis":
        data["redis"] = {"url": redis_url}
    return data


async def _limits_sliding(storage, checks: int) -> list[float]:
    # The ``limits`` library's SlidingWindowCounter doing what a request needs:
    # the hit, then the window's state for the RateLimit headers.
    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    limiter = SlidingWindowCounterRateLimiter(storage)
    item = RateLimitItemPerMinute(1_000_000)
    samples = []
    for i in range(checks):
        t = time.perf_counter()
        await limiter.hit(item, f"ip:10.0.{i % 50}.1")
        await limiter.get_window_stats(item, f"ip:10.0.{i % 50}.1")
        samples.append((time.perf_counter() - t) * 1e6)
    return samples


async def check_latency(redis_url: str, checks: int) -> dict[str, tuple[float, float]]:
    """p50/p99 (us) of one limit check: our stores' ``hit``, and ``limits``' sliding window counter for comparison."""
    from limits.aio.storage import MemoryStorage, RedisStorage

    from plugboard import keys
    from plugboard.core_config import CoreConfig
    from plugboard.plugins.protection.providers.memory import MemoryRateLimitStore
    from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig, RedisRateLimitStore
    from plugboard.providers.redis import RedisConfig
    import attrs

    out = {}
    stores = {
        "memory": MemoryRateLimitStore(),
        "redis": RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: attrs.evolve(CoreConfig(), redis=RedisConfig(url=redis_url))}),
    }
    for name, store in stores.items():
        await store.start()
        samples = []
        for i in range(checks):
            t = time.perf_counter()
            await store.hit(f"ip:10.0.{i % 50}.1", limit=1_000_000, window=60)
            samples.append((time.perf_counter() - t) * 1e6)
        await store.close()
        out[name] = samples
    out["limits memory (hit + stats)"] = await _limits_sliding(MemoryStorage(), checks)
    redis_storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix="bench-limits")
    out["limits redis (hit + stats)"] = await _limits_sliding(redis_storage, checks)
    summary = {}
    for name, samples in out.items():
        samples.sort()
        summary[name] = (samples[len(samples) // 2], samples[int(len(samples) * 0.99)])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--sides", default="off,memory,redis,memory-metrics")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    from plugboard.testing_servers import RedisServer

    sides = args.sides.split(",")
    root = Path(tempfile.mkdtemp(prefix="plugboard-bench-protection-"))
    lua = scripts(root)
    env = dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING")
    env.pop("REDIS_URL", None)
    redis_server = RedisServer().start()
    subprocess.run(["taskset", "-p", "-c", "1", str(redis_server.process.pid)], check=True, capture_output=True)
    results: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
    try:
        (root / "settings.yaml").write_text(json.dumps(settings_for("off", None)))
        port = free_port()
        seed = start([PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], "0", env)
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        seed_books(f"http://127.0.0.1:{port}/graphql")
        stop(seed)
        for _ in range(args.rounds):
            for side in sides:
                port = free_port()
                (root / "settings.yaml").write_text(json.dumps(settings_for(side, redis_server.url)))
                proc = start([PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], "0", env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/readyz")
                    url = f"http://127.0.0.1:{port}/graphql"
                    check = post(url, QUERY)
                    assert len(check["data"]["books"]) == 20, check
                    wrk(url, 2, args.connections, lua["fixed"])  # warm-up
                    results[side].append(measure(proc, url, args.duration, args.connections, lua["fixed"]))
                finally:
                    stop(proc)
        latency = asyncio.run(check_latency(redis_server.url, args.checks))
    finally:
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)

    medians = {side: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for side, rs in results.items()}
    print(versions())
    print("| side | req/s (median) | p99 ms (median) | server CPU us/request (median) | rounds |")
    print("|---|---|---|---|---|")
    for side, (rps, p99, cpu) in medians.items():
        print(f"| {side} | {rps:.0f} | {p99:.1f} | {cpu:.0f} | {args.rounds} x {args.duration}s |")
    print()
    for side in medians:
        if side == "off" or "off" not in medians:
            continue
        # Each round ran every side once, back to back: its ratios show the spread.
        rounds = ", ".join(f"{r[0] / o[0]:.2f}" for r, o in zip(results[side], results["off"]))
        target = f"target >= {TARGETS[side]}" if side in TARGETS else "no target"
        # Server CPU per request moves less than req/s when other work shares the machine.
        by_cpu = medians["off"][2] / medians[side][2]
        print(f"{side}/off: {medians[side][0] / medians['off'][0]:.2f} ({target}; rounds {rounds}); by server CPU per request {by_cpu:.2f}")
    print()
    print("| store | limit check p50 us | p99 us | checks |")
    print("|---|---|---|---|")
    for name, (p50, p99) in latency.items():
        print(f"| {name} | {p50:.0f} | {p99:.0f} | {args.checks} |")
    print("raw:", json.dumps(results))


if __name__ == "__main__":
    main()
