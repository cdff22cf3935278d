"""200 concurrent 100 KB uploads: ``uploadFile`` to local storage vs a bare aiohttp multipart handler.

Side A: ``plugboard serve`` with the uploads plugin on the embedded defaults
(local storage, SQLite records): multipart parsing, type sniffing, Pillow
decode (the files are PNGs), the record, the atomic write with fsync.
Side B: a bare aiohttp handler (its own process) that reads the same
multipart body and writes the file with ``open().write()``. Side C: the same
handler made durable as the local storage is (the write, an fsync of the file
and one of its folder, in a worker thread): the floor that durability alone
sets. Same client, same run; latency of each request, p50 / p99 / max.

    python bench/uploads_local.py [--requests 200] [--rounds 3] [--profile out.txt]

``--profile`` samples the plugboard server with py-spy during the rounds
(``pip install py-spy``) and writes collapsed stacks (flamegraph input).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

BARE = r'''
import asyncio, os, sys, uuid
from pathlib import Path
from aiohttp import web
root = Path(sys.argv[2])
durable = sys.argv[3] == "durable"
def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
async def handle(request):
    reader = await request.multipart()
    ops = await (await reader.next()).read()
    mapping = await (await reader.next()).read()
    part = await reader.next()
    path = root / uuid.uuid4().hex
    size = 0
    if durable:
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            data += chunk
        size = len(data)
        await asyncio.to_thread(write, path, data)
        return web.json_response({"data": {"uploadFile": {"size": size}}})
    with open(path, "wb") as f:
        while chunk := await part.read_chunk(65536):
            f.write(chunk)
            size += len(chunk)
    return web.json_response({"data": {"uploadFile": {"size": size}}})
app = web.Application(client_max_size=10 * 1024 * 1024)
app.router.add_post("/graphql", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def sample_png(size: int) -> bytes:
    from PIL import Image

    # Noise compresses badly, so a 180x180 RGB image is about 100 KB.
    image = Image.frombytes("RGB", (180, 180), os.urandom(180 * 180 * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def one(session: aiohttp.ClientSession, url: str, content: bytes) -> float:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("operations", json.dumps({"query": "mutation($f: Upload!) { uploadFile(file: $f) { size } }", "variables": {"f": None}}))
    form.add_field("map", json.dumps({"0": ["variables.f"]}))
    form.add_field("0", content, filename="p.png", content_type="image/png")
    start = time.perf_counter()
    async with session.post(url, data=form, headers={"apollo-require-preflight": "1"}) as resp:
        body = await resp.json(content_type=None)
    took = time.perf_counter() - start
    assert body["data"]["uploadFile"]["size"] == len(content), body
    return took


async def burst(url: str, n: int, content: bytes) -> list[float]:
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        await one(session, url, content)  # warm
        return sorted(await asyncio.gather(*(one(session, url, content) for _ in range(n))))


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="py-spy collapsed stacks of the plugboard server go here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from versions import print_report

    print_report(("pillow", "filetype", "sqlalchemy", "aiosqlite"))
    root = Path(tempfile.mkdtemp(prefix="plugboard-uploads-local-"))
    (root / "bare").mkdir()
    (root / "durable").mkdir()
    settings = {
        "plugins": ["uploads"],
        "server": {"data_dir": "var"},
        "uploads": {"allow_anonymous": True, "image_optimization": {"enabled": False}},
    }
    (root / "settings.yaml").write_text(json.dumps(settings))
    (root / "bare.py").write_text(BARE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUGBOARD_", "AWS_", "UPLOAD_"))}
    env.update(PLUGBOARD_LOG_LEVEL="WARNING", TMPDIR=str(root))
    ours_port, bare_port, durable_port = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(ours_port)], env=env),
        subprocess.Popen([sys.executable, str(root / "bare.py"), str(bare_port), str(root / "bare"), "plain"], env=env),
        subprocess.Popen([sys.executable, str(root / "bare.py"), str(durable_port), str(root / "durable"), "durable"], env=env),
    ]
    try:
        wait_http(f"http://127.0.0.1:{ours_port}/readyz")
        wait_http(f"http://127.0.0.1:{bare_port}/graphql")
        wait_http(f"http://127.0.0.1:{durable_port}/graphql")
        content = sample_png(100 * 1024)
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(procs[0].pid), "--format", "raw", "--rate", "250", "-o", args.profile],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)
        print(f"{args.requests} concurrent uploads of a {len(content) / 1024:.0f} KB PNG\n")
        print("| round | side | p50 | p99 | max | wall |")
        print("|---|---|---|---|---|---|")
        for round in range(1, args.rounds + 1):
            sides = (("bare aiohttp handler", bare_port), ("bare handler + fsync", durable_port), ("uploadFile (plugboard, local)", ours_port))
            p99s = {}
            for side, port in sides:
                start = time.perf_counter()
                lat = asyncio.run(burst(f"http://127.0.0.1:{port}/graphql", args.requests, content))
                wall = time.perf_counter() - start
                p99s[side] = pct(lat, 99)
                print(f"| {round} | {side} | {pct(lat, 50):.0f} ms | {pct(lat, 99):.0f} ms | {lat[-1] * 1000:.0f} ms | {wall:.2f} s |")
            ours = p99s["uploadFile (plugboard, local)"]
            print(f"|   | p99 ratio | vs bare {ours / p99s['bare aiohttp handler']:.1f}x | vs bare + fsync {ours / p99s['bare handler + fsync']:.1f}x | | |")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
