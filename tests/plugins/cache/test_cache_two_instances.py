"""Two ``plugboard serve`` processes on one Redis: a query cached by A is a hit on B, a mutation on B invalidates it on A."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    def __init__(self, root: Path, env: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"instance exited: {self.proc.stderr.read()}")
            try:
                async with session.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("instance not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


async def query(session, url, q, variables=None):
    async with session.post(url + "/graphql", json={"query": q, "variables": variables}) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 200 and "errors" not in body, body
        return body["data"], resp.headers.get("X-Cache")


BOOKS = "{ books(first: 5) { id title author { id name } } }"
BOOK = "query($id: ID!) { book(id: $id) { id title } }"
UPDATE = 'mutation($id: ID!, $t: String!) { updateBook(id: $id, input: {title: $t}) { id title } }'


@pytest.mark.parametrize(
    "services",
    [
        pytest.param({"cache": {"provider": "redis"}, "pubsub": {"provider": "redis"}}, id="redis"),
        pytest.param({"cache": {"provider": "redis", "local": {"enabled": True, "ttl": "30s"}}, "pubsub": {"provider": "redis"}}, id="multi-level"),
    ],
)
async def test_shared_hits_and_cross_instance_invalidation(tmp_path, redis_url, services):
    root = tmp_path / "proj"
    root.mkdir()
    settings = {
        "plugins": ["books", "cache"],
        "books": {"allow_anonymous_mutations": True},
        "server": {"data_dir": "var"},
        "redis": {"url": redis_url},
        "services": services,
        "cache": {"redis": {"enabled": True}},
    }
    (root / "settings.yaml").write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
    a, b = Instance(root, env), Instance(root, env)
    async with aiohttp.ClientSession() as session:
        try:
            await a.wait_ready(session)
            await b.wait_ready(session)
            created = await query(session, a.url, 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert"}) { id } }')
            book_id = created[0]["createBook"]["id"]

            data_a, x_a = await query(session, a.url, BOOKS)
            data_b, x_b = await query(session, b.url, BOOKS)
            assert (x_a, x_b) == ("MISS", "HIT") and data_a == data_b
            await query(session, a.url, BOOK, {"id": book_id})
            _, x = await query(session, b.url, BOOK, {"id": book_id})
            assert x == "HIT"
            # In multi-level mode A now holds both entries in its local layer too.
            await query(session, a.url, BOOKS)

            await query(session, b.url, UPDATE, {"id": book_id, "t": "Dune Messiah"})
            await asyncio.sleep(0.3)  # the invalidation crosses Redis pubsub to A
            data, x = await query(session, a.url, BOOKS)
            assert x == "MISS" and data["books"][0]["title"] == "Dune Messiah"
            data, x = await query(session, a.url, BOOK, {"id": book_id})
            assert x == "MISS" and data["book"]["title"] == "Dune Messiah"
            _, x = await query(session, b.url, BOOKS)
            assert x == "HIT"
        finally:
            a.stop()
            b.stop()
