"""The books example's bookUpdated(id) subscription, fed by createBook/updateBook through the pubsub."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard import keys
from plugboard.app import create_app
from plugboard.graphql.context import Context
from plugboard.graphql.operation import Operation
from plugboard.settings import Settings
from plugboard_books.resolvers import TOPIC

# Only the pubsub of the realtime plugin is needed here, not its transports.
REALTIME = {"websockets": False, "serverSentEvents": False, "channels": {"enabled": False}}

CREATE = "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a}) { id title createdAt updatedAt } }"
UPDATE = "mutation($id: ID!, $t: String!) { updateBook(id: $id, input: {title: $t}) { id title updatedAt } }"
UPDATED = "subscription($id: ID) { bookUpdated(id: $id) { id title author { name } createdAt updatedAt } }"


def build(tmp_path, plugins, records=None):
    data = {"plugins": plugins, "server": {"data_dir": str(tmp_path / "var"), "admin_token": TOKEN}}
    if "realtime" in plugins:
        data["realtime"] = REALTIME
    if records:
        data["records"] = {"url": records}
    return create_app(Settings.from_mapping(data, root=tmp_path))


@pytest.fixture(params=["sqlite", "postgresql"])
async def client(request, tmp_path, aiohttp_client):
    records, cleanup = None, None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        name = f"books_rt_{uuid.uuid4().hex[:8]}"
        records = server.create_database(name)
        cleanup = lambda: server.drop_database(name)  # noqa: E731
    client = await aiohttp_client(build(tmp_path, ["books", "realtime"], records))
    yield client
    if cleanup:
        await client.close()  # release the pool before dropping the database
        cleanup()


# Mutations need an identity or the operator's token.
TOKEN = "books-operator"


async def gql(client, query, variables=None):
    resp = await client.post("/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert "errors" not in result, result
    return result["data"]


async def subscribe(app, variables):
    context = Context(app=app, request=None, request_id="test", transport="ws")
    op = Operation(query=UPDATED, variables=variables, operation_name=None, extensions=None, context=context, transport="ws")
    app[keys.RUNNER].prepare(op, allowed_types=("subscription",))
    return await app[keys.RUNNER].subscribe(op)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_book_updated_follows_create_and_update(client):
    app = client.app
    pubsub = app[keys.PUBSUB]
    dune = (await gql(client, CREATE, {"t": "Dune", "a": "Frank Herbert"}))["createBook"]
    other = (await gql(client, CREATE, {"t": "Neuromancer", "a": "William Gibson"}))["createBook"]

    one = await subscribe(app, {"id": dune["id"]})
    every = await subscribe(app, {"id": None})
    next_one, next_every = asyncio.ensure_future(anext(one)), asyncio.ensure_future(anext(every))
    await until(lambda: pubsub.subscriber_counts().get(TOPIC) == 2)

    # Another book's update reaches only the unfiltered subscriber.
    await gql(client, UPDATE, {"id": other["id"], "t": "Neuromancer (1984)"})
    first_any = (await asyncio.wait_for(next_every, 5))["data"]["bookUpdated"]
    assert (first_any["id"], first_any["title"]) == (other["id"], "Neuromancer (1984)")
    assert not next_one.done()

    updated = (await gql(client, UPDATE, {"id": dune["id"], "t": "Dune (1965)"}))["updateBook"]
    got = (await asyncio.wait_for(next_one, 5))
    assert "errors" not in got, got
    book = got["data"]["bookUpdated"]
    assert book["id"] == dune["id"] and book["title"] == "Dune (1965)"
    assert book["author"] == {"name": "Frank Herbert"}
    # DateTime survives the JSON trip through the pubsub.
    assert dt.datetime.fromisoformat(book["createdAt"]) == dt.datetime.fromisoformat(dune["createdAt"])
    assert dt.datetime.fromisoformat(book["updatedAt"]) == dt.datetime.fromisoformat(updated["updatedAt"])
    assert (await asyncio.wait_for(anext(every), 5))["data"]["bookUpdated"]["title"] == "Dune (1965)"

    # createBook publishes too.
    next_every = asyncio.ensure_future(anext(every))
    created = (await gql(client, CREATE, {"t": "Hyperion", "a": "Dan Simmons"}))["createBook"]
    assert (await asyncio.wait_for(next_every, 5))["data"]["bookUpdated"]["id"] == created["id"]

    await one.aclose()
    await every.aclose()
    await until(lambda: TOPIC not in pubsub.subscriber_counts())


async def test_book_updated_bad_input(client):
    app = client.app
    stream = await subscribe(app, {"id": "abc"})
    with pytest.raises(TartifletteError) as e:
        await asyncio.wait_for(anext(stream), 5)
    assert e.value.extensions["code"] == "BAD_USER_INPUT"
    await stream.aclose()
    # A failed update publishes nothing.
    listener = app[keys.PUBSUB].subscribe(TOPIC)
    resp = await client.post("/graphql", json={"query": UPDATE, "variables": {"id": "999", "t": "x"}}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await resp.json())["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert listener.pending == 0
    await listener.close()


async def test_without_realtime_the_core_pubsub_still_carries_updates(tmp_path, aiohttp_client):
    # The pubsub is the core's: books publish whether or not the realtime plugin is on.
    client = await aiohttp_client(build(tmp_path, ["books"]))
    pubsub = client.app[keys.PUBSUB]
    book = (await gql(client, CREATE, {"t": "Dune", "a": "Frank Herbert"}))["createBook"]
    stream = await subscribe(client.app, {"id": book["id"]})
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: pubsub.subscriber_counts().get(TOPIC) == 1)
    assert (await gql(client, UPDATE, {"id": book["id"], "t": "Dune!"}))["updateBook"]["title"] == "Dune!"
    assert (await asyncio.wait_for(first, 5))["data"]["bookUpdated"]["title"] == "Dune!"
    await stream.aclose()
