"""@cached for resolvers and provider calls; per-request DataLoaders; the books example on them."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cache_testkit import make_app
from plugboard import keys
from plugboard.plugins.cache import cached, invalidate, metrics
from plugboard.plugins.cache.loaders import Loaders

calls: list[str] = []


@cached(ttl=60, key=lambda app, isbn: isbn, tags=lambda result, app, isbn: [f"Isbn:{isbn}", "Isbn"])
async def lookup(app, isbn: str) -> dict:
    calls.append(isbn)
    return {"isbn": isbn, "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "n": len(calls)}


async def test_cached_provider_call(aiohttp_client, tmp_path):
    calls.clear()
    client = await aiohttp_client(make_app(tmp_path))
    app = client.app
    first = await lookup(app, "123")
    again = await lookup(app, "123")
    assert first == again and isinstance(again["at"], dt.datetime) and calls == ["123"]
    await lookup(app, "456")
    await invalidate(app, ["Isbn:123"])
    assert (await lookup(app, "123"))["n"] == 3
    assert (await lookup(app, "456"))["n"] == 2
    await invalidate(app, ["Isbn"])
    await lookup(app, "456")
    assert calls == ["123", "456", "123", "456"]


async def test_cached_on_a_full_store_stores_a_key_on_its_second_miss(aiohttp_client, tmp_path):
    calls.clear()
    client = await aiohttp_client(make_app(tmp_path, {"services": {"cache": {"provider": "memory", "max_entries": 1}}}))
    app = client.app
    await lookup(app, "1")
    await lookup(app, "2")  # the store is full and "2" new: not stored
    await lookup(app, "1")
    assert calls == ["1", "2"]
    await lookup(app, "2")  # missed before: stored now
    await lookup(app, "2")
    assert calls == ["1", "2", "2"]


async def test_cached_without_the_plugin_is_a_plain_call():
    calls.clear()
    await lookup({}, "1")
    await lookup({}, "1")
    assert calls == ["1", "1"]


def test_cached_refuses_bad_use():
    with pytest.raises(TypeError, match="async def"):
        cached()(lambda: None)
    with pytest.raises(ValueError, match="invalid cache tag"):
        cached(tags=["has space"])


async def test_dataloader_batches_and_memoises():
    seen = []

    async def batch(keys, context):
        seen.append(list(keys))
        return [k * 10 for k in keys]

    loaders = Loaders(context=None)
    loader = loaders.get(batch)
    loader.want([1, 2, 3])
    assert seen == []  # want fetches nothing by itself
    assert await loader.load(2) == 20
    assert seen == [[2, 1, 3]]
    assert await loader.load_many([1, 3, 4]) == [10, 30, 40]
    assert seen == [[2, 1, 3], [4]]
    assert loaders.get(batch) is loader


async def _books_app(aiohttp_client, tmp_path, plugins):
    # These tests add books anonymously; books' mutations need an identity by default.
    client = await aiohttp_client(make_app(tmp_path, {"plugins": plugins, "books": {"allow_anonymous_mutations": True}}))
    for title, author in [("Dune", "Herbert"), ("Emma", "Austen"), ("Persuasion", "Austen"), ("Ubik", "Dick")]:
        resp = await client.post(
            "/graphql",
            json={"query": "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a}) { id } }", "variables": {"t": title, "a": author}},
        )
        assert resp.status == 200
    statements: list[str] = []
    sa.event.listen(client.app[keys.RECORDS].engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    return client, statements


@pytest.mark.parametrize("plugins, expected", [(["books", "cache"], 2), (["books"], 4)])
async def test_books_authors_books_is_one_query_with_the_loader(aiohttp_client, tmp_path, plugins, expected):
    client, statements = await _books_app(aiohttp_client, tmp_path, plugins)
    resp = await client.post("/graphql", json={"query": "{ authors { name books { title } } }"})
    body = await resp.json()
    assert body["data"]["authors"] == [
        {"name": "Herbert", "books": [{"title": "Dune"}]},
        {"name": "Austen", "books": [{"title": "Emma"}, {"title": "Persuasion"}]},
        {"name": "Dick", "books": [{"title": "Ubik"}]},
    ]
    assert len(statements) == expected, statements  # authors + one batch, not one per author
    statements.clear()
    await client.post("/graphql", json={"query": "{ books(first: 10) { title author { name } } }"})
    assert len(statements) in (0, 1)  # the join: one query for all authors (0: a cache hit)


async def test_books_book_is_cached_and_invalidated(aiohttp_client, tmp_path):
    client, statements = await _books_app(aiohttp_client, tmp_path, ["books", "cache"])
    q = {"query": "query($id: ID!) { book(id: $id) { title } }", "variables": {"id": "1"}}
    await client.post("/graphql", json=q)
    q2 = {"query": "query($id: ID!) { b: book(id: $id) { title } }", "variables": {"id": "1"}}
    await client.post("/graphql", json=q2)  # another document: a response miss, a @cached hit
    assert len(statements) == 1
    await client.post("/graphql", json={"query": 'mutation { updateBook(id: 1, input: {title: "Dune!"}) { id } }'})
    statements.clear()
    resp = await client.post("/graphql", json={"query": "query($id: ID!) { c: book(id: $id) { title } }", "variables": {"id": "1"}})
    assert (await resp.json())["data"]["c"]["title"] == "Dune!"
    assert len(statements) == 1
    assert metrics(client.app)["memory"]["hits"] >= 1
