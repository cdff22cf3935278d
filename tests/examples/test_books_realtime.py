"""The books example's bookUpdated(id) subscription, fed by createBook/updateBook through the pubsub."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard import keys
from plugboard.testing import eventually, subscribe
from plugboard.testing import gql_data as kit_gql_data
from plugboard_books.resolvers import TOPIC

# Mutations need an identity or the operator's token.
TOKEN = "books-operator"
gql_data = functools.partial(kit_gql_data, token=TOKEN)

# Only the pubsub of the realtime plugin is needed here, not its transports.
REALTIME = {"websockets": False, "serverSentEvents": False, "channels": {"enabled": False}}

CREATE = "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a}) { id title createdAt updatedAt } }"
UPDATE = "mutation($id: ID!, $t: String!) { updateBook(id: $id, input: {title: $t}) { id title updatedAt } }"
UPDATED = "subscription($id: ID) { bookUpdated(id: $id) { id title author { name } createdAt updatedAt } }"


def settings(plugins, records=None):
    data = {"plugins": plugins, "server": {"admin_token": TOKEN}}
    if "realtime" in plugins:
        data["realtime"] = REALTIME
    if records:
        data["records"] = {"url": records}
    return data


@pytest.fixture(params=["sqlite", "postgresql"])
async def client(request, plugboard_client):
    records = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    client = await plugboard_client(settings(["books", "realtime"], records))
    yield client
    await client.close()  # release the pool before postgres_url drops the database


async def test_book_updated_follows_create_and_update(client):
    app = client.app
    pubsub = app[keys.PUBSUB]
    dune = (await gql_data(client, CREATE, {"t": "Dune", "a": "Frank Herbert"}))["createBook"]
    other = (await gql_data(client, CREATE, {"t": "Neuromancer", "a": "William Gibson"}))["createBook"]

    one = await subscribe(app, UPDATED, {"id": dune["id"]})
    every = await subscribe(app, UPDATED, {"id": None})
    next_one, next_every = asyncio.ensure_future(anext(one)), asyncio.ensure_future(anext(every))
    await eventually(lambda: pubsub.subscriber_counts().get(TOPIC) == 2)

    # Another book's update reaches only the unfiltered subscriber.
    await gql_data(client, UPDATE, {"id": other["id"], "t": "Neuromancer (1984)"})
    first_any = (await asyncio.wait_for(next_every, 5))["data"]["bookUpdated"]
    assert (first_any["id"], first_any["title"]) == (other["id"], "Neuromancer (1984)")
    assert not next_one.done()

    updated = (await gql_data(client, UPDATE, {"id": dune["id"], "t": "Dune (1965)"}))["updateBook"]
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
    created = (await gql_data(client, CREATE, {"t": "Hyperion", "a": "Dan Simmons"}))["createBook"]
    assert (await asyncio.wait_for(next_every, 5))["data"]["bookUpdated"]["id"] == created["id"]

    await one.aclose()
    await every.aclose()
    await eventually(lambda: TOPIC not in pubsub.subscriber_counts())


async def test_book_updated_bad_input(client):
    app = client.app
    stream = await subscribe(app, UPDATED, {"id": "abc"})
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


async def test_without_realtime_the_core_pubsub_still_carries_updates(plugboard_client):
    # The pubsub is the core's: books publish whether or not the realtime plugin is on.
    client = await plugboard_client(settings(["books"]))
    pubsub = client.app[keys.PUBSUB]
    book = (await gql_data(client, CREATE, {"t": "Dune", "a": "Frank Herbert"}))["createBook"]
    stream = await subscribe(client.app, UPDATED, {"id": book["id"]})
    first = asyncio.ensure_future(anext(stream))
    await eventually(lambda: pubsub.subscriber_counts().get(TOPIC) == 1)
    assert (await gql_data(client, UPDATE, {"id": book["id"], "t": "Dune!"}))["updateBook"]["title"] == "Dune!"
    assert (await asyncio.wait_for(first, 5))["data"]["bookUpdated"]["title"] == "Dune!"
    await stream.aclose()
