"""A large upload through the GraphQL multipart endpoint into S3 (moto server) vs plain aiobotocore.

Side A: ``uploadFile`` on ``plugboard serve`` (uploads plugin, ``s3`` storage):
the client streams generated chunks; the core spools the part to a temporary
file, the plugin sniffs it and streams it to S3 in a multipart upload.
Side B: the same bytes sent by aiobotocore straight to the same moto server
in 8 MB parts, in the same run. Targets (issue 11): the server's peak RSS
grows by less than 50 MB; A's throughput >= 0.8x B's.

    python bench/uploads_s3.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
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

CHUNK = 1024 * 1024
PART = 8 * CHUNK
BUCKET = "bench-uploads"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


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


async def chunks(size: int):
    block = os.urandom(CHUNK)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


async def through_plugboard(url: str, size: int) -> dict:
    query = "mutation($f: Upload!) { uploadFile(file: $f) { id size mimetype } }"
    with aiohttp.MultipartWriter("form-data") as writer:
        part = writer.append(json.dumps({"query": query, "variables": {"f": None}}))
        part.set_content_disposition("form-data", name="operations")
        part = writer.append(json.dumps({"0": ["variables.f"]}))
        part.set_content_disposition("form-data", name="map")
        part = writer.append(chunks(size), {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="0", filename="big.bin")
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=writer, headers={"apollo-require-preflight": "1"}, timeout=aiohttp.ClientTimeout(total=1800)) as resp:
                result = await resp.json(content_type=None)
    assert "errors" not in result, result
    return result["data"]["uploadFile"]


async def plain_aiobotocore(endpoint: str, size: int) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", endpoint_url=endpoint, **KEYS) as s3:
        created = await s3.create_multipart_upload(Bucket=BUCKET, Key="plain.bin")
        parts, number, buffer = [], 1, bytearray()
        async for chunk in chunks(size):
            buffer += chunk
            if len(buffer) >= PART:
                sent = await s3.upload_part(Bucket=BUCKET, Key="plain.bin", UploadId=created["UploadId"], PartNumber=number, Body=bytes(buffer))
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                number, buffer = number + 1, bytearray()
        if buffer:
            sent = await s3.upload_part(Bucket=BUCKET, Key="plain.bin", UploadId=created["UploadId"], PartNumber=number, Body=bytes(buffer))
            parts.append({"ETag": sent["ETag"], "PartNumber": number})
        await s3.complete_multipart_upload(Bucket=BUCKET, Key="plain.bin", UploadId=created["UploadId"], MultipartUpload={"Parts": parts})
        await s3.delete_object(Bucket=BUCKET, Key="plain.bin")


async def make_bucket(endpoint: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", endpoint_url=endpoint, **KEYS) as s3:
        await s3.create_bucket(Bucket=BUCKET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mb * CHUNK
    root = Path(tempfile.mkdtemp(prefix="plugboard-uploads-s3-"))
    s3_port, port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = {
        "plugins": ["uploads"],
        "server": {"data_dir": "var"},
        "graphql": {"max_file_size": "4GB"},
        "services": {"storage": {"default": {"provider": "s3", "bucket": BUCKET, "endpoint_url": endpoint, "region": "us-east-1",
                                             "access_key_id": "testing", "secret_access_key": "testing"}}},
        "uploads": {"max_file_size": "4GB", "allowed_types": ["*/*"], "allow_anonymous": True, "image_optimization": {"enabled": False}},
    }
    (root / "settings.yaml").write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUGBOARD_", "AWS_", "UPLOAD_"))}
    env.update(PLUGBOARD_LOG_LEVEL="WARNING", TMPDIR=str(root))
    proc = None
    try:
        wait_http(endpoint + "/")
        asyncio.run(make_bucket(endpoint))
        proc = subprocess.Popen([sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)], env=env)
        wait_http(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/graphql"
        asyncio.run(through_plugboard(url, 1024))  # warm the code paths
        before = status_kb(proc.pid, "VmRSS")
        rows = []
        for round in range(1, args.rounds + 1):
            start = time.perf_counter()
            asyncio.run(plain_aiobotocore(endpoint, size))
            plain = time.perf_counter() - start
            start = time.perf_counter()
            got = asyncio.run(through_plugboard(url, size))
            ours = time.perf_counter() - start
            assert got["size"] == size, got
            rows.append((round, plain, ours))
        peak = status_kb(proc.pid, "VmHWM")
        print(f"| round | plain aiobotocore | uploadFile via plugboard | ratio (plain time / ours) |")
        print("|---|---|---|---|")
        for round, plain, ours in rows:
            print(f"| {round} | {plain:.1f} s ({args.size_mb / plain:.0f} MB/s) | {ours:.1f} s ({args.size_mb / ours:.0f} MB/s) | {plain / ours:.2f} |")
        print(f"\nserver RSS before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB, growth {(peak - before) / 1024:.1f} MB (target < 50 MB)")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        moto.terminate()
        moto.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
