"""Email throughput: ``sendEmail`` through the queue to a local aiosmtpd, against plain aiosmtplib.

    python bench/email_throughput.py --messages 500 --rounds 3

Each round, alternating which side goes first:

- **Plugboard**: ``plugboard serve`` (realtime + jobs + email; memory broker,
  so the server is the one worker, ``jobs.concurrency`` 10; SQLite records)
  with the smtp mailer pointing at the sink. The client posts ``sendEmail``
  (welcome template) over HTTP with 8 connections and waits until every job
  is COMPLETED (``jobCounts``). Time: first request to last completion.
- **aiosmtplib**: the same rendered message (``previewEmailTemplate``, then
  ``build_message`` per recipient), sent by a plain loop in the client
  process to the same sink: sequential over one kept connection
  (``plain-keep``: the best a plain loop does, and what the pooled smtp
  mailer does), sequential with a new connection per message (``plain-new``:
  ``aiosmtplib.send``, what the mailer did before it pooled), and 10
  concurrent senders each keeping a connection (the worker's concurrency).

The sink is aiosmtpd in its own process, discarding messages. The issue's
target: Plugboard >= 0.8x the plain loop (``plain-keep``; the ratio to
``plain-new`` is printed too). Also reported: template renders per
second in process (cached compile and layout, and a cold layout each time).
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where its own
# name would shadow the standard library's ``email`` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
PY = sys.executable
ADMIN = "bench-admin"
SEND = "mutation($to: String!) { sendEmail(to: $to, templateId: \"welcome\", variables: {username: \"Ann\", activationLink: \"https://app.example.com/activate/0123456789\"}) }"
PREVIEW = "{ previewEmailTemplate(id: \"welcome\", variables: {username: \"Ann\", activationLink: \"https://app.example.com/activate/0123456789\"}) { subject html text } }"
SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(smtp_port: int, http_port: int, redis_url: str | None, pool_size: int = 5, max_messages: int = 100) -> str:
    jobs = "{concurrency: 10, schedules: []}" if redis_url is None else "{concurrency: 10, schedules: [], broker: redis, store: redis}"
    return f"""
plugins: [realtime, jobs, email]
server: {{host: 127.0.0.1, port: {http_port}, data_dir: var, admin_token: {ADMIN}, secret_key: bench}}
redis: {{url: {redis_url or "null"}}}
services:
  mailer: {{provider: smtp, host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 10s, pool_size: {pool_size}, max_messages: {max_messages}}}
jobs: {jobs}
email: {{per_recipient_limit: 0, from_address: "Bench <bench@example.com>"}}
"""


async def gql(session: aiohttp.ClientSession, url: str, query: str, variables: dict | None = None) -> dict:
    async with session.post(url, json={"query": query, "variables": variables or {}}, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        data = await r.json()
    if data.get("errors"):
        raise RuntimeError(data["errors"])
    return data["data"]


async def completed(session: aiohttp.ClientSession, url: str) -> tuple[int, int]:
    data = await gql(session, url, "{ jobCounts { status count } }")
    counts = {c["status"]: c["count"] for c in data["jobCounts"]}
    return counts.get("COMPLETED", 0), counts.get("FAILED", 0)


ENQUEUE = "mutation($a: JSON) { enqueueJob(type: \"send-email\", args: $a) { id } }"


async def plugboard_round(url: str, messages: int, connections: int, preview: dict | None = None) -> float:
    """sendEmail (preview None), or the jobs plugin alone: enqueueJob("send-email") of the rendered message."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        done_before, _ = await completed(session, url)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(messages):
            queue.put_nowait(i)

        async def client() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                if preview is None:
                    await gql(session, url, SEND, {"to": f"user{i}@example.com"})
                else:
                    args = {"to": f"user{i}@example.com", "subject": preview["subject"], "text": preview["text"], "html": preview["html"], "from": "Bench <bench@example.com>"}
                    await gql(session, url, ENQUEUE, {"a": args})

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        while True:
            done, failed = await completed(session, url)
            if failed:
                raise RuntimeError(f"{failed} send-email jobs failed")
            if done - done_before >= messages:
                return time.perf_counter() - started
            await asyncio.sleep(0.01)


async def plain_round(message_factory, smtp_port: int, messages: int, concurrency: int, keep: bool) -> float:
    """``keep``: each sender keeps one connection for all its messages; else one connection per message."""
    import aiosmtplib

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        queue.put_nowait(i)

    async def sender() -> None:
        if keep:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False, timeout=10) as client:
                while not queue.empty():
                    i = queue.get_nowait()
                    await client.send_message(message_factory(f"user{i}@example.com"), sender="bench@example.com", recipients=[f"user{i}@example.com"])
            return
        while not queue.empty():
            i = queue.get_nowait()
            message = message_factory(f"user{i}@example.com")
            await aiosmtplib.send(message, sender="bench@example.com", recipients=[f"user{i}@example.com"],
                                  hostname="127.0.0.1", port=smtp_port, start_tls=False, timeout=10)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started


def render_rate(seconds: float = 2.0) -> tuple[float, float]:
    from plugboard.plugins.email.templates import Renderer

    renderer = Renderer(templates_dir=None, timeout=2.0, cache_size=256)
    subject, source = renderer.file_source("welcome")
    variables = {"username": "Ann", "activationLink": "https://app.example.com/activate/0123456789"}
    rates = []
    for vary in (False, True):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            # vary: a different name each time, so the MJML layout is never cached.
            renderer.render(subject, source, {**variables, "username": f"Ann {n}"} if vary else variables)
            n += 1
        rates.append(n / (time.perf_counter() - started))
    return rates[0], rates[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--pool-size", type=int, default=5, help="services.mailer.pool_size (smtp connections the worker keeps)")
    parser.add_argument("--max-messages", type=int, default=100, help="services.mailer.max_messages (1: a connection per message, as before pooling)")
    parser.add_argument("--setup", choices=["embedded", "redis"], default="embedded",
                        help="embedded: SQLite + memory broker (the server is the worker); redis: Redis broker and job store, one `plugboard worker`")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from versions import print_report

    print_report(("aiosmtplib", "aiosmtpd", "redis", "taskiq", "taskiq-redis", "mjml-python", "jinja2"), redis=args.setup == "redis")

    from plugboard.providers.mailer import build_message

    root = Path(tempfile.mkdtemp(prefix="plugboard-email-bench-"))
    smtp_port, http_port = free_port(), free_port()
    redis = None
    if args.setup == "redis":
        from plugboard.testing_servers import RedisServer

        redis = RedisServer().start()
    (root / "settings.yaml").write_text(settings(smtp_port, http_port, redis.url if redis else None, args.pool_size, args.max_messages))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sink = subprocess.Popen([PY, "-c", SINK, str(smtp_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "ready"
    log = open(root / "server.log", "w")
    server = subprocess.Popen([PY, "-m", "plugboard.cli", "serve", "--root", str(root)], env=env, stdout=log, stderr=log)
    worker = None
    url = f"http://127.0.0.1:{http_port}/graphql"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{http_port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            preview = (await gql(session, url, PREVIEW))["previewEmailTemplate"]
        if redis is not None:
            # After the server is ready: it has created the records tables the worker uses.
            worker = subprocess.Popen([PY, "-m", "plugboard.cli", "worker", "--root", str(root)], env=env, stdout=log, stderr=log)

        def factory(to: str):
            return build_message(sender="Bench <bench@example.com>", to=[to], subject=preview["subject"], text=preview["text"], html=preview["html"])

        # Warm up both sides.
        await plugboard_round(url, 20, args.connections)
        await plain_round(factory, smtp_port, 20, 1, True)
        order = ["plugboard", "jobs-only", "plain-keep-1", "plain-new-1", "plain-keep-10"]
        results: dict[str, list[float]] = {side: [] for side in order}
        for r in range(args.rounds):
            for side in order if r % 2 == 0 else reversed(order):
                if side == "plugboard":
                    elapsed = await plugboard_round(url, args.messages, args.connections)
                elif side == "jobs-only":
                    elapsed = await plugboard_round(url, args.messages, args.connections, preview)
                else:
                    _, how, n = side.split("-")
                    elapsed = await plain_round(factory, smtp_port, args.messages, int(n), how == "keep")
                results[side].append(args.messages / elapsed)
                print(f"round {r + 1} {side:10s} {args.messages / elapsed:8.1f} msg/s", flush=True)
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        if redis is not None:
            redis.stop()
        sink.stdin.close()
        sink.wait(timeout=10)
        if sys.exc_info()[0] is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"server log: {root / 'server.log'}", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in results.items()}
    labels = {
        "plain-keep-1": "aiosmtplib loop, sequential, one kept connection",
        "plain-new-1": "aiosmtplib loop, sequential, a connection per message",
        "plain-keep-10": "aiosmtplib loop, 10 concurrent, a kept connection each",
        "jobs-only": "jobs plugin alone: enqueueJob(send-email) of the rendered message",
        "plugboard": "Plugboard sendEmail -> queue -> smtp",
    }
    print(f"\nsetup: {args.setup}, {args.messages} messages per round, {args.connections} client connections, smtp pool_size {args.pool_size}")
    print("| side | msg/s (median) | rounds |")
    print("|---|---|---|")
    for side in ("plain-keep-1", "plain-new-1", "plain-keep-10", "jobs-only", "plugboard"):
        print(f"| {labels[side]} | {med[side]:.0f} | {', '.join(f'{x:.0f}' for x in results[side])} |")
    print(f"\nsendEmail / sequential loop, kept connection: {med['plugboard'] / med['plain-keep-1']:.2f} (target >= 0.8); "
          f"/ a connection per message: {med['plugboard'] / med['plain-new-1']:.2f}; / 10 concurrent: {med['plugboard'] / med['plain-keep-10']:.2f}")
    print(f"jobs plugin alone / sequential loop, kept connection: {med['jobs-only'] / med['plain-keep-1']:.2f}; sendEmail / jobs alone: {med['plugboard'] / med['jobs-only']:.2f}")
    cached, cold = render_rate()
    print(f"template render (welcome): {cached:.0f}/s cached (compile + layout), {cold:.0f}/s with a fresh MJML layout each time")


if __name__ == "__main__":
    asyncio.run(main())
