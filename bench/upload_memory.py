"""Peak RSS of ``plugboard serve`` while it receives a 1 GB multipart upload.

The upload streams from the client (generated chunks, never held whole) to a
spooled temporary file on the server and then through a resolver that hashes
it. Target: the server's peak RSS grows by less than 50 MB. A 1 KB upload in
the same run gives the baseline growth.

    python bench/upload_memory.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from versions import print_report  # bench/versions.py: the script's folder is on sys.path

HERE = Path(__file__).resolve().parent
CHUNK = 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def upload(url: str, size: int) -> tuple[str, str]:
    digest = hashlib.sha256()
    block = os.urandom(CHUNK)

    async def body():
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            digest.update(piece)
            sent += len(piece)
            yield piece

    with aiohttp.MultipartWriter("form-data") as writer:
        part = writer.append(json.dumps({"query": "mutation($f: Upload!) { sink(file: $f) }", "variables": {"f": None}}))
        part.set_content_disposition("form-data", name="operations")
        part = writer.append(json.dumps({"0": ["variables.f"]}))
        part.set_content_disposition("form-data", name="map")
        part = writer.append(body(), {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="0", filename="big.bin")
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=writer, headers={"apollo-require-preflight": "1"}, timeout=aiohttp.ClientTimeout(total=600)) as resp:
                result = await resp.json(content_type=None)
    return result["data"]["sink"], f"{size}:{digest.hexdigest()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    print_report()
    root = Path(tempfile.mkdtemp(prefix="plugboard-upload-"))
    (root / "settings.yaml").write_text(
        json.dumps({"plugins": ["upload_sink"], "server": {"data_dir": "var"}, "graphql": {"max_file_size": "4GB"}})
    )
    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, PYTHONPATH=str(HERE), PLUGBOARD_LOG_LEVEL="WARNING", TMPDIR=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], env=env)
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(upload(url, 1024))  # warm the code paths
        before = status_kb(proc.pid, "VmRSS")
        hwm_small_before = status_kb(proc.pid, "VmHWM")
        asyncio.run(upload(url, 1024))
        small_growth = max(0, status_kb(proc.pid, "VmHWM") - max(before, hwm_small_before))
        before = status_kb(proc.pid, "VmRSS")
        start = time.perf_counter()
        got, want = asyncio.run(upload(url, args.size_mb * CHUNK))
        took = time.perf_counter() - start
        assert got == want, (got, want)
        peak = status_kb(proc.pid, "VmHWM")
        growth = (peak - before) / 1024
        print("| upload | server RSS before | peak RSS | growth | time |")
        print("|---|---|---|---|---|")
        print(f"| 1 KB (baseline) | {before / 1024:.1f} MB | - | {small_growth / 1024:.1f} MB | - |")
        print(f"| {args.size_mb} MB | {before / 1024:.1f} MB | {peak / 1024:.1f} MB | {growth:.1f} MB | {took:.1f} s |")
        print(f"\npeak RSS growth for {args.size_mb} MB: {growth:.1f} MB (target < 50 MB); content hash verified")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
