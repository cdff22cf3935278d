"""Two ``plugboard serve`` processes sharing one real Redis: events and presence cross instances."""

from __future__ import annotations

import asyncio
import json
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

HERE = Path(__file__).resolve().parent


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


@pytest.fixture
async def pair(tmp_path, redis_url):
    """Instances A and B: realtime (redis pubsub) + books, one Redis, one SQLite file."""
    root = tmp_path / "proj"
    root.mkdir()
    settings = {
        "plugins": ["realtime", "books", "pb_token_auth"],
        "server": {"data_dir": "var"},
        "redis": {"url": redis_url},
        "services": {"pubsub": {"provider": "redis"}},
    }
    (root / "settings.yaml").write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(HERE)
    a, b = Instance(root, env), Instance(root, env)
    async with aiohttp.ClientSession() as session:
        try:
            await a.wait_ready(session)
            await b.wait_ready(session)
            yield a, b, session
        finally:
            a.stop()
            b.stop()


async def gql(session, url, query, variables=None, token="alice"):
    async with session.post(
        url + "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 200 and "errors" not in body, body
        return body["data"]


async def create_book(session, url) -> str:
    data = await gql(session, url, 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert"}) { id } }')
    return data["createBook"]["id"]


UPDATE = 'mutation($id: ID!, $t: String!) { updateBook(id: $id, input: {title: $t}) { id } }'


async def test_websocket_subscriber_on_a_gets_mutation_on_b(pair):
    a, b, session = pair
    book_id = await create_book(session, a.url)
    async with session.ws_connect(a.url.replace("http", "ws") + "/graphql", protocols=("graphql-transport-ws",)) as ws:
        await ws.send_json({"type": "connection_init", "payload": {"authToken": "alice"}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        await ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": "subscription($id: ID) { bookUpdated(id: $id) { id title } }", "variables": {"id": book_id}}}
        )
        await asyncio.sleep(0.3)  # the subscription reaches Redis before the mutation
        await gql(session, b.url, UPDATE, {"id": book_id, "t": "Dune Messiah"})
        message = await ws.receive_json(timeout=5)
        assert message == {"id": "1", "type": "next", "payload": {"data": {"bookUpdated": {"id": book_id, "title": "Dune Messiah"}}}}


async def test_sse_subscriber_on_a_gets_mutation_on_b(pair):
    a, b, session = pair
    book_id = await create_book(session, a.url)
    body = {"query": "subscription($id: ID) { bookUpdated(id: $id) { title } }", "variables": {"id": book_id}}
    async with session.post(a.url + "/graphql", json=body, headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0.3)
        await gql(session, b.url, UPDATE, {"id": book_id, "t": "Children of Dune"})
        event = None
        async with asyncio.timeout(5):
            buffer = ""
            while event is None:
                buffer += (await resp.content.readany()).decode()
                for block in buffer.split("\n\n")[:-1]:
                    lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
                    if lines.get("event") == "next":
                        event = json.loads(lines["data"])
                        break
        assert event == {"data": {"bookUpdated": {"title": "Children of Dune"}}}


async def test_presence_set_on_a_is_visible_on_b(pair):
    a, b, session = pair
    assert await gql(session, a.url, "mutation { heartbeat }", token="carol") == {"heartbeat": True}
    online = await gql(session, b.url, "{ onlineUsers { id online } }", token="dave")
    assert {"id": "carol", "online": True} in online["onlineUsers"]
