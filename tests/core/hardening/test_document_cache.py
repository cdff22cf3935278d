"""Finding 2: the document cache is bounded by bytes, and keeps no failed document.

The review saw three distinct ~1 MB alias documents take RSS from 97 to
398 MB for good. The cache now weighs each document (text and parsed form)
and stops at ``graphql.document_cache_bytes``.
"""

from __future__ import annotations

import gc

import pytest

from hardening_kit import aliases, error_code, post, rss, while_responsive

from plugboard import keys

MB = 1024 * 1024


def distinct_aliases(n: int, tag: int, field: str = "books { id }") -> str:
    return "{ " + " ".join(f"t{tag}_{i}: {field}" for i in range(n)) + " }"


async def test_big_documents_are_refused_before_they_cost_memory(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"plugins": ["books"]}))
    await post(client, "{ __typename }")
    gc.collect()
    before = rss()
    for tag in range(5):
        status, body = await post(client, distinct_aliases(40_000, tag, "__typename"))
        assert (status, error_code(body)) == (400, "DOCUMENT_TOO_LARGE")
    gc.collect()
    assert rss() - before < 10 * MB


async def test_big_documents_do_not_stay_in_memory(make_app, aiohttp_client):
    # The limits off (a deployer's choice): ~1 MB documents reach Tartiflette.
    # The first one grows the heap (parsing needs ~150 MB at its peak); the
    # ones after it must reuse that memory, not add to it: the cache does
    # not keep them, and the parser's C heap is freed.
    off = {"size": 0, "tokens": 0, "aliases": 0, "fields": 0}
    app = make_app({"plugins": ["books"], "graphql": {"limits": off, "document_cache_bytes": "16MB"}})
    client = await aiohttp_client(app)
    sizes = []
    for tag in range(5):
        document = distinct_aliases(40_000, tag, "__typename")
        assert 800_000 < len(document) < 1_000_000
        status, body = await post(client, document)
        assert status == 200 and len(body["data"]) == 40_000
        gc.collect()
        sizes.append(rss())
    cache = app[keys.ENGINE].documents
    assert len(cache) == 0 and cache.bytes == 0  # each weighs more than 16 MB
    grown = sizes[-1] - sizes[0]
    assert grown < 30 * MB, f"RSS grew by {grown / MB:.0f} MB over 4 documents: {[s // MB for s in sizes]}"


async def test_cache_holds_at_most_its_bytes(make_app, aiohttp_client):
    app = make_app({"plugins": ["books"], "graphql": {"document_cache_bytes": "2MB"}})
    client = await aiohttp_client(app)
    for tag in range(40):
        status, body = await post(client, distinct_aliases(25, tag))
        assert status == 200, body
    cache = app[keys.ENGINE].documents
    assert 0 < len(cache) < 40
    assert cache.bytes <= 2 * MB


async def test_failed_documents_are_not_cached(make_app, aiohttp_client):
    app = make_app({"plugins": ["books"]})
    client = await aiohttp_client(app)
    cache = app[keys.ENGINE].documents
    for i in range(50):
        assert (await post(client, f"{{ nope{i} }}"))[0] == 400  # does not validate
        assert (await post(client, f"{{ books {{ id }} {'{' * i}"))[0] == 400  # does not parse
        assert (await post(client, aliases(31 + i)))[0] == 400  # over a limit
    assert len(cache) == 0 and cache.bytes == 0
    await post(client, "{ books { id } }")
    assert len(cache) == 1


async def test_a_repeated_refusal_stays_cheap(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"plugins": ["books"]}))

    async def attack():
        for _ in range(20):
            status, body = await post(client, aliases(1_000))
            assert (status, error_code(body)) == (400, "TOO_MANY_ALIASES")

    _, slowest = await while_responsive(client, attack)
    assert slowest < 0.1


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_document_cache_bytes_is_validated(make_app, value):
    from plugboard.errors import ConfigError

    with pytest.raises(ConfigError, match="graphql.document_cache_bytes"):
        make_app({"graphql": {"document_cache_bytes": value}})
