"""Fan-out: one event published to 5,000 subscribers in one server process.

Plugboard (realtime plugin, memory pubsub, `tick` subscription) with half the
subscribers on WebSocket (graphql-transport-ws) and half on SSE (graphql-sse),
against the baseline in the same run: a bare aiohttp-sse broadcast of the
same payload to the same number of plain SSE clients. Server on CPU 0,
clients (two processes) on CPU 1.

Measured: delivery latency p50/p99 over every delivery of `--events` events
published 0.5 s apart; sustained events/s for a burst of `--burst` events
(all deliveries counted); server RSS per idle subscriber.

    python bench/fanout/run.py [--subscribers 5000] [--events 10] [--burst 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/versions.py
from versions import print_report  # noqa: E402

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError


def wait_url(url: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def publish(url: str, seq: int) -> None:
    req = urllib.request.Request(url + "/bench/publish", data=json.dumps({"seq": seq}).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_case(name: str, server_cmd: list[str], url: str, modes: list[str], per_client: int, events: int, burst: int, env: dict) -> dict:
    server = subprocess.Popen(["taskset", "-c", "0", *server_cmd], env=env, stdout=subprocess.DEVNULL)
    clients: list[subprocess.Popen] = []
    try:
        wait_url(url + "/readyz")
        time.sleep(0.5)
        rss_before = rss_kb(server.pid)
        for mode in modes:
            clients.append(
                subprocess.Popen(
                    ["taskset", "-c", "1", PY, str(HERE / "client.py"), url, mode, str(per_client)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for c in clients:
            line = c.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"client failed: {line!r}")
        time.sleep(1.0)
        subscribers = per_client * len(modes)
        per_subscriber_kb = (rss_kb(server.pid) - rss_before) / subscribers
        for seq in range(events):
            publish(url, seq)
            time.sleep(0.5)
        start = time.perf_counter()
        for seq in range(events, events + burst):
            publish(url, seq)
        reports = []
        for c in clients:
            c.stdin.write(f"report {events + burst}\n")
            c.stdin.flush()
        # Each client answers once all its subscribers have every event (or
        # after 60 s); the counts say what arrived.
        for c in clients:
            reports.append(json.loads(c.stdout.readline()))
        elapsed = time.perf_counter() - start
    finally:
        for c in clients:
            c.kill()
            c.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    paced: list[float] = []
    delivered_burst = 0
    detail = {}
    for mode, r in zip(modes, reports):
        detail[mode] = {seq: round(percentile(v, 0.99) * 1000) for seq, v in sorted(r["latencies"].items(), key=lambda kv: int(kv[0])) if int(seq) < events}
    for r in reports:
        for seq, values in r["latencies"].items():
            if int(seq) < events:
                paced += values
            else:
                delivered_burst += len(values)
    return {
        "name": name,
        "subscribers": subscribers,
        "p50_ms": statistics.median(paced) * 1000,
        "p99_ms": percentile(paced, 0.99) * 1000,
        "delivered_paced": len(paced),
        "expected_paced": subscribers * events,
        "delivered_burst": delivered_burst,
        "burst_events_per_s": burst / elapsed,
        "deliveries_per_s": delivered_burst / elapsed,
        "kb_per_subscriber": per_subscriber_kb,
        "p99_by_client_and_event": detail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    print_report(["aiohttp-sse"])
    per_client = args.subscribers // 2
    env = dict(os.environ, PYTHONPATH=str(HERE), PLUGBOARD_LOG_LEVEL="WARNING")
    root = Path(tempfile.mkdtemp(prefix="plugboard-fanout-"))
    settings = {
        "plugins": ["realtime", "fanout_plugin"],
        "server": {"data_dir": "var"},
        "realtime": {"websocket": {"max_connections_per_ip": 100000, "keepalive": "60s"}, "sse": {"keepalive": "60s", "max_connections_per_ip": 100000}},
    }
    (root / "settings.yaml").write_text(json.dumps(settings))
    try:
        port = free_port()
        baseline = run_case(
            "bare aiohttp-sse broadcast",
            [PY, str(HERE / "baseline_server.py"), str(port)],
            f"http://127.0.0.1:{port}",
            ["baseline", "baseline"],
            per_client,
            args.events,
            args.burst,
            env,
        )
        port = free_port()
        plugboard = run_case(
            "Plugboard (WS + SSE)",
            [PY, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)],
            f"http://127.0.0.1:{port}",
            ["ws", "sse"],
            per_client,
            args.events,
            args.burst,
            env,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| server | subscribers | p50 ms | p99 ms | delivered (paced) | burst events/s | deliveries/s | RSS per idle subscriber |")
    print("|---|---|---|---|---|---|---|---|")
    for r in (baseline, plugboard):
        print(
            f"| {r['name']} | {r['subscribers']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['delivered_paced']}/{r['expected_paced']} | {r['burst_events_per_s']:.1f} | {r['deliveries_per_s']:.0f} | {r['kb_per_subscriber']:.1f} KB |"
        )
    for r in (baseline, plugboard):
        print(f"p99 ms per client process and event, {r['name']}: {r['p99_by_client_and_event']}")
    print(f"\np99 ratio Plugboard/baseline: {plugboard['p99_ms'] / baseline['p99_ms']:.2f} (target <= 1.5)")
    print(f"memory per idle subscriber: {plugboard['kb_per_subscriber']:.1f} KB (target <= 20 KB)")


if __name__ == "__main__":
    main()
