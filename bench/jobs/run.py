"""Jobs per second through the Redis broker: Plugboard against plain taskiq-redis.

One command, one run, both sides, same Redis build. Each case starts a fresh
``redis-server`` (no persistence) pinned to CPU 1. Worker: one process with
concurrency 10, pinned to CPU 0 — ``plugboard worker --concurrency 10`` (the
jobs plugin, ``jobs.broker: redis``, job records in Redis) or ``taskiq worker
baseline_app:broker --workers 1 --max-async-tasks 10`` (a ``RedisStreamBroker``
with a ``RedisAsyncResultBackend``). The task is a no-op on both sides.
Producer (``producer.py``) pinned to CPU 1: ``app[JOBS].enqueue("noop")`` in a
started app, or ``noop.kiq()``, awaited one after the other and each timed.

Modes:

- ``drain``: enqueue N jobs with no worker running (enqueue latency alone),
  then start the worker and time it from its first finished job to its last
  (worker start-up is not counted): jobs/s = finished after the first / time.
- ``live``: the worker runs first; the producer enqueues N jobs while it
  consumes; jobs/s = N / (first enqueue -> last job finished), and the
  enqueue latency under load.

"Finished" is what each side's own bookkeeping says, polled every 5 ms:
Plugboard's COMPLETED index (``ZCARD``), taskiq's consumer group (entries
read minus pending: acknowledged after the result is saved). Also measured:
the worker's CPU time per job (user + system, from /proc, over the same
span), which other load on a shared machine disturbs far less than jobs/s;
and on CPU 1, which the producer shares with Redis, the producer's CPU per
enqueue and redis-server's CPU per job (the whole case: enqueues, reads,
record updates, acknowledgements, events) — in ``live`` mode the two
together bound the rate.
Rounds alternate the sides; the figures kept are the medians.

``--sides ...,plugboard-realtime`` adds Plugboard with the realtime plugin
on Redis pubsub: every status change is then published (live updates).

    python bench/jobs/run.py [--jobs 5000] [--rounds 3] [--modes drain,live] [--sides baseline,plugboard]
"""

from __future__ import annotations

import abc

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
import threading
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/versions.py
from versions import print_report  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
QUEUE = "plugboard:jobs"
WORKER_CPU = "0"
SIDE_CPU = "1"  # Redis, producer and this script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (taskiq's worker runs in a child process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        pids += [int(c) for c in children]
    return total


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Redis:
    """A fresh redis-server without persistence, on CPU 1."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="plugboard-bench-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["taskset", "-c", SIDE_CPU, "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis.from_url(self.url)
        for _ in range(500):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Side(abc.ABC):
    """How one side is run and how its finished jobs are counted."""

    name: str

    @abc.abstractmethod
    def worker(self, root: Path) -> list[str]:
        """The worker's command line."""

    @abc.abstractmethod
    def finished(self, client: redis.Redis) -> int:
        """Jobs finished so far, by this side's own bookkeeping."""

    @staticmethod
    def consuming(client: redis.Redis) -> bool:
        """A worker waits in XREADGROUP (Redis 7.0 lists a consumer only once it got an entry)."""
        return any(c.get("cmd") == "xreadgroup" for c in client.client_list())


class Plugboard(Side):
    name = "Plugboard (jobs plugin)"
    key = "plugboard"

    def worker(self, root: Path) -> list[str]:
        return [PY, "-m", "plugboard.cli", "worker", "--root", str(root), "--concurrency", "10"]

    def producer(self, root: Path) -> list[str]:
        return ["plugboard", str(root)]

    def finished(self, client: redis.Redis) -> int:
        return client.zcard(f"{QUEUE}:idx:status:COMPLETED")



class PlugboardRealtime(Plugboard):
    name = "Plugboard + realtime (redis pubsub)"
    key = "plugboard-realtime"


class Baseline(Side):
    name = "taskiq-redis (baseline)"
    key = "baseline"

    def worker(self, root: Path) -> list[str]:
        return [str(BIN / "taskiq"), "worker", "baseline_app:broker", "--workers", "1", "--max-async-tasks", "10", "--log-level", "WARNING"]

    def producer(self, root: Path) -> list[str]:
        return ["baseline", "-"]

    def finished(self, client: redis.Redis) -> int:
        return _group(client, "bench:taskiq", "taskiq", "entries-read") - _group(client, "bench:taskiq", "taskiq", "pending")



def _group(client: redis.Redis, stream: str, group: str, field: str) -> int:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0
    for g in groups:
        if g["name"].decode() == group:
            return g[field] or 0
    return 0


def write_settings(root: Path, redis_url: str, realtime: bool) -> None:
    settings = {
        "plugins": ["jobs", "bench_tasks"],
        "server": {"data_dir": "var"},
        "redis": {"url": redis_url},
        "jobs": {"broker": "redis"},
    }
    if realtime:
        # Live updates: every status change published to Redis pubsub (topic jobs).
        # The pubsub is the core's service (services.pubsub); without this
        # side it is the embedded memory one, in each process.
        settings["plugins"].insert(0, "realtime")
        settings["services"] = {"pubsub": {"provider": "redis"}}
    (root / "settings.yaml").write_text(json.dumps(settings))


def start(cmd: list[str], cpu: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], env=env, cwd=HERE, **kw)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def produce(side: Side, root: Path, n: int, env: dict) -> dict:
    out = subprocess.run(
        ["taskset", "-c", SIDE_CPU, PY, str(HERE / "producer.py"), *side.producer(root), str(n)],
        env=env, cwd=HERE, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side.name} producer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_finished(side: Side, client: redis.Redis, total: int, worker: subprocess.Popen, timeout: float = 300.0) -> tuple[float, int, float, float]:
    """Poll until ``total`` jobs are finished: (time of the first seen, count
    then, time of the last, worker CPU seconds in between)."""
    first_at, first_count, first_cpu = None, 0, 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = side.finished(client)
        now = time.time()
        if first_at is None and done > 0:
            first_at, first_count, first_cpu = now, done, cpu_seconds(worker.pid)
        if done >= total:
            return first_at, first_count, now, cpu_seconds(worker.pid) - first_cpu
        if worker.poll() is not None:
            raise RuntimeError(f"{side.name} worker exited with {worker.returncode}")
        time.sleep(0.005)
    raise RuntimeError(f"{side.name}: {side.finished(client)}/{total} finished after {timeout}s")


def run_case(side: Side, mode: str, n: int, base_env: dict) -> dict:
    server = Redis()
    root = Path(tempfile.mkdtemp(prefix="plugboard-bench-jobs-"))
    env = dict(base_env, BENCH_REDIS_URL=server.url)
    worker = None
    log = open(root / "worker.log", "w")
    try:
        write_settings(root, server.url, realtime=side.key == "plugboard-realtime")
        total = n + 1  # the producer's warm-up job included
        redis_cpu0 = cpu_seconds(server.proc.pid)
        if mode == "drain":
            produced = produce(side, root, n, env)
            worker = start(side.worker(root), WORKER_CPU, env, stdout=subprocess.DEVNULL, stderr=log)
            first_at, first_count, last_at, cpu = wait_finished(side, server.client, total, worker)
            rate = (total - first_count) / (last_at - first_at)
            cpu_per_job = cpu / (total - first_count)
        else:
            worker = start(side.worker(root), WORKER_CPU, env, stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + 60
            while not side.consuming(server.client):
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"{side.name} worker did not start")
                time.sleep(0.02)
            result: dict = {}
            thread = threading.Thread(target=lambda: result.update(produce(side, root, n, env)))
            cpu_before = cpu_seconds(worker.pid)
            thread.start()
            _first_at, _first_count, last_at, _cpu = wait_finished(side, server.client, total, worker)
            cpu_per_job = (cpu_seconds(worker.pid) - cpu_before) / total
            thread.join()
            produced = result
            rate = n / (last_at - produced["t0"])
        lat = produced["latencies"]
        redis_cpu = cpu_seconds(server.proc.pid) - redis_cpu0
        return {
            "side": side.name,
            "mode": mode,
            "jobs_per_s": rate,
            "worker_cpu_us_per_job": cpu_per_job * 1e6,
            "enqueue_p50_ms": statistics.median(lat) * 1000,
            "enqueue_p99_ms": percentile(lat, 0.99) * 1000,
            "enqueue_per_s": n / (produced["t1"] - produced["t0"]),
            "producer_cpu_us_per_job": produced["cpu"] / n * 1e6,
            "redis_cpu_us_per_job": redis_cpu / total * 1e6,
        }
    except Exception:
        log.flush()
        print(f"--- {side.name} worker log ---\n{(root / 'worker.log').read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if worker is not None:
            stop(worker)
        log.close()
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="drain,live")
    parser.add_argument(
        "--sides", default="baseline,plugboard", help="baseline, plugboard, plugboard-realtime (the jobs plugin publishing live updates)"
    )
    args = parser.parse_args()
    print_report(["redis", "taskiq", "taskiq-redis", "taskiq-dependencies", "anyio", "pydantic"], redis=True)
    print("load average at start: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    os.sched_setaffinity(0, {int(SIDE_CPU)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(HERE), PLUGBOARD_LOG_LEVEL="WARNING")
    sides = [side for side in (Baseline(), Plugboard(), PlugboardRealtime()) if side.key in args.sides.split(",")]
    results: list[dict] = []
    for mode in args.modes.split(","):
        for r in range(args.rounds):
            # Alternate which side goes first, so drift hits both.
            for side in sides if r % 2 == 0 else reversed(sides):
                res = run_case(side, mode, args.jobs, env)
                res["round"] = r + 1
                results.append(res)
                print(
                    f"round {r + 1} {mode:5} {side.name:26} {res['jobs_per_s']:7.0f} jobs/s  worker CPU {res['worker_cpu_us_per_job']:4.0f} us/job  enqueue p50 {res['enqueue_p50_ms']:.2f} ms"
                    f"  p99 {res['enqueue_p99_ms']:.2f} ms  ({res['enqueue_per_s']:.0f} enqueues/s)"
                    f"  CPU 1: producer {res['producer_cpu_us_per_job']:.0f} us/enqueue, redis {res['redis_cpu_us_per_job']:.0f} us/job",
                    flush=True,
                )
    print()
    print("| mode | side | jobs/s (median) | each round | worker CPU per job | enqueue p50 ms | enqueue p99 ms | enqueues/s | producer CPU per enqueue | redis CPU per job |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    medians: dict[tuple[str, str], dict] = {}
    for mode in args.modes.split(","):
        for side in sides:
            rs = [r for r in results if r["mode"] == mode and r["side"] == side.name]
            m = {
                k: statistics.median(r[k] for r in rs)
                for k in (
                    "jobs_per_s", "worker_cpu_us_per_job", "enqueue_p50_ms", "enqueue_p99_ms", "enqueue_per_s",
                    "producer_cpu_us_per_job", "redis_cpu_us_per_job",
                )
            }
            medians[mode, side.key] = m
            each = ", ".join(f"{r['jobs_per_s']:.0f}" for r in rs)
            print(
                f"| {mode} | {side.name} | **{m['jobs_per_s']:.0f}** | {each} | {m['worker_cpu_us_per_job']:.0f} us | "
                f"{m['enqueue_p50_ms']:.2f} | {m['enqueue_p99_ms']:.2f} | {m['enqueue_per_s']:.0f} | "
                f"{m['producer_cpu_us_per_job']:.0f} us | {m['redis_cpu_us_per_job']:.0f} us |"
            )
    print()
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    for mode in args.modes.split(","):
        base = medians.get((mode, "baseline"))
        if base is None:
            break
        for key, target in (("plugboard", 0.9), ("plugboard-realtime", 0.8)):
            if (mode, key) not in medians:
                continue
            pb = medians[mode, key]
            print(
                f"{mode}: throughput {key}/baseline {pb['jobs_per_s'] / base['jobs_per_s']:.2f} (target >= {target}); "
                f"worker CPU per job {pb['worker_cpu_us_per_job'] / base['worker_cpu_us_per_job']:.2f}x the baseline's; "
                f"enqueue p99 {pb['enqueue_p99_ms']:.2f} ms (target < 5 ms)"
            )

if __name__ == "__main__":
    main()
