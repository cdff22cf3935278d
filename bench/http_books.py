"""Throughput and latency of the books query: Plugboard against bare Tartiflette.

One command, one run, both servers: each is started pinned to CPU 0 with
uvloop and loaded by wrk pinned to CPU 1 with the same query
(``{ books(first: 20) { id title author { id name } } }``, POST JSON, 64
connections). Rounds alternate baseline/Plugboard so drift on a shared machine
hits both; the figures kept are the medians, and the ratios are what count.

    python bench/http_books.py [--duration 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from versions import print_report  # bench/versions.py: the script's folder is on sys.path

HERE = Path(__file__).resolve().parent
QUERY = "{ books(first: 20) { id title author { id name } } }"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_plugins() -> list[str]:
    """Every built-in plugin that exists, plus the books example."""
    names = [ep.name for ep in entry_points(group="plugboard.plugins") if ep.dist and ep.dist.name == "plugboard"]
    return sorted(names) + ["books"]


def wait_ready(url: str, timeout: float = 30.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def post(url: str, query: str, variables: dict | None = None, headers: dict | None = None) -> dict:
    data = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def seed_books(url: str, headers: dict | None = None) -> None:
    """The benchmarks' rows: 100 books by 17 authors, through books' own mutation."""
    create = "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a, publishedYear: 1990}) { id } }"
    for i in range(100):
        answer = post(url, create, {"t": f"Book {i}", "a": f"Author {i % 17}"}, headers)
        if answer.get("errors"):
            raise RuntimeError(f"seeding failed: {answer['errors']}")


def start(cmd: list[str], cpu: str, env: dict | None = None) -> subprocess.Popen:
    # The server's log goes to a file: a pipe nobody reads fills and stalls the server.
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile())


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(url: str, duration: int, connections: int, script: Path) -> tuple[float, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return rps, float(p99.group(1)) * scale


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(proc: subprocess.Popen, url: str, duration: int, connections: int, script: Path) -> tuple[float, float, float]:
    """``(req/s, p99 ms, server CPU us per request)`` of one wrk run.

    CPU per request is the server's own CPU time over the requests wrk
    completed: other work on the shared machine lowers req/s but leaves it
    (mostly) alone, so it shows a step's cost where req/s swings.
    """
    before = cpu_seconds(proc.pid)
    rps, p99 = wrk(url, duration, connections, script)
    used = cpu_seconds(proc.pid) - before
    return rps, p99, used / (rps * duration) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--plugins", help="comma-separated plugins to enable (default: every built-in plus books)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    print_report(["SQLAlchemy", "aiosqlite", "plugboard-books"])
    print("wrk:", subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0:1], flush=True)

    root = Path(tempfile.mkdtemp(prefix="plugboard-bench-"))
    plugins = args.plugins.split(",") if args.plugins else all_plugins()
    # books' mutations need an identity or the operator's token (seeding only).
    settings = {"plugins": plugins, "server": {"data_dir": "var", "admin_token": "bench-operator"}}
    # Uncached execution against uncached Tartiflette, and one client address
    # sending 64 connections' worth: the response cache and the request limits
    # are measured by bench/cache.py and bench/protection.py instead.
    if "cache" in plugins:
        settings["cache"] = {"queryCache": {"enabled": False}}
    if "protection" in plugins:
        settings["protection"] = {"requests": {"enabled": False}}
    (root / "settings.yaml").write_text(json.dumps(settings))
    script = root / "post_books.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps({'query': QUERY}))}\n"
    )
    env = dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING")
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "plugboard": []}
    try:
        port = free_port()
        seed = start([PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], "0", env)
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        seed_books(f"http://127.0.0.1:{port}/graphql", {"Authorization": "Bearer bench-operator"})
        stop(seed)
        for _ in range(args.rounds):
            for name in ("baseline", "plugboard"):
                port = free_port()
                if name == "baseline":
                    cmd = [PYTHON, str(HERE / "baseline_tartiflette.py"), "--root", str(root), "--port", str(port)]
                    ready = f"http://127.0.0.1:{port}/graphql"
                else:
                    cmd = [PYTHON, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)]
                    ready = f"http://127.0.0.1:{port}/readyz"
                proc = start(cmd, "0", env)
                try:
                    if name == "baseline":
                        _wait_post(ready)
                    else:
                        wait_ready(ready)
                    url = f"http://127.0.0.1:{port}/graphql"
                    check = post(url, QUERY)
                    assert len(check["data"]["books"]) == 20, check
                    wrk(url, 2, args.connections, script)  # warm-up
                    results[name].append(wrk(url, args.duration, args.connections, script))
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base_rps = statistics.median(r for r, _ in results["baseline"])
    base_p99 = statistics.median(p for _, p in results["baseline"])
    pb_rps = statistics.median(r for r, _ in results["plugboard"])
    pb_p99 = statistics.median(p for _, p in results["plugboard"])
    print(f"plugins enabled: {', '.join(plugins)}")
    print("| server | req/s (median) | p99 ms (median) | rounds |")
    print("|---|---|---|---|")
    for name, rps, p99 in (("bare Tartiflette (tuned)", base_rps, base_p99), ("Plugboard", pb_rps, pb_p99)):
        print(f"| {name} | {rps:.0f} | {p99:.1f} | {args.rounds} x {args.duration}s |")
    print(f"\nthroughput ratio Plugboard/baseline: {pb_rps / base_rps:.2f} (target >= 0.90)")
    print(f"p99 ratio Plugboard/baseline: {pb_p99 / base_p99:.2f} (target <= 1.20)")
    print("raw:", json.dumps(results))


def _wait_post(url: str, timeout: float = 30.0) -> None:
    start_t = time.perf_counter()
    while time.perf_counter() - start_t < timeout:
        try:
            post(url, "{ __typename }")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


if __name__ == "__main__":
    main()
