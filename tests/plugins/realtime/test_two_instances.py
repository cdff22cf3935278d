"""Two ``plugboard serve`` processes sharing one real Redis: events and presence cross instances."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from plugboard.testing import EventStream, TransportWS, gql_data

HERE = Path(__file__).resolve().parent


@pytest.fixture
async def pair(plugboard_serve, redis_url):
    """Clients of instances A and B: realtime (redis pubsub) + books, one Redis, one SQLite file."""
    settings = {
        "plugins": ["realtime", "books", "pb_token_auth"],
        "redis": {"url": redis_url},
        "services": {"pubsub": {"provider": "redis"}},
    }
    a = plugboard_serve(settings, pythonpath=[HERE])
    b = plugboard_serve(a.root, pythonpath=[HERE])
    async with aiohttp.ClientSession(base_url=a.url) as to_a, aiohttp.ClientSession(base_url=b.url) as to_b:
        yield to_a, to_b


async def create_book(server) -> str:
    data = await gql_data(server, 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert"}) { id } }', token="alice")
    return data["createBook"]["id"]


UPDATE = 'mutation($id: ID!, $t: String!) { updateBook(id: $id, input: {title: $t}) { id } }'


async def test_websocket_subscriber_on_a_gets_mutation_on_b(pair):
    a, b = pair
    book_id = await create_book(a)
    async with await TransportWS.connect(a, {"authToken": "alice"}) as ws:
        await ws.subscribe("1", "subscription($id: ID) { bookUpdated(id: $id) { id title } }", {"id": book_id})
        await asyncio.sleep(0.3)  # the subscription reaches Redis before the mutation
        await gql_data(b, UPDATE, {"id": book_id, "t": "Dune Messiah"}, token="alice")
        message = await ws.receive()
        assert message == {"id": "1", "type": "next", "payload": {"data": {"bookUpdated": {"id": book_id, "title": "Dune Messiah"}}}}


async def test_sse_subscriber_on_a_gets_mutation_on_b(pair):
    a, b = pair
    book_id = await create_book(a)
    query = "subscription($id: ID) { bookUpdated(id: $id) { title } }"
    async with await EventStream.subscribe(a, query, {"id": book_id}) as stream:
        await asyncio.sleep(0.3)
        await gql_data(b, UPDATE, {"id": book_id, "t": "Children of Dune"}, token="alice")
        assert await stream.next() == {"data": {"bookUpdated": {"title": "Children of Dune"}}}


async def test_presence_set_on_a_is_visible_on_b(pair):
    a, b = pair
    assert await gql_data(a, "mutation { heartbeat }", token="carol") == {"heartbeat": True}
    online = await gql_data(b, "{ onlineUsers { id online } }", token="dave")
    assert {"id": "carol", "online": True} in online["onlineUsers"]
