"""The response cache step: hits and misses, policy, scope, errors, mutations, headers, 304, stampede."""

from __future__ import annotations

import asyncio

from cache_testkit import get, make_app, post
from plugboard.plugins.cache import metrics

ITEMS = "{ items { id name } }"


async def test_second_query_is_a_hit(client, fixture_plugin):
    r1, b1 = await post(client, ITEMS)
    r2, b2 = await post(client, ITEMS)
    assert b1 == b2 and b1["data"]["items"][0] == {"id": "1", "name": "item 1"}
    assert fixture_plugin.calls["items"] == 1
    assert (r1.headers["X-Cache"], r2.headers["X-Cache"]) == ("MISS", "HIT")
    m = metrics(client.app)
    assert m["response"]["hits"] == 1 and m["response"]["stores"] == 1 and m["memory"]["hits"] == 1


async def test_layout_and_variables_are_part_of_the_key(client, fixture_plugin):
    await post(client, "query($id: ID!) { item(id: $id) { id name } }", {"id": "1"})
    await post(client, "query($id: ID!) {\n  item(id: $id) {\n id, name } }  # same", {"id": "1"})
    assert fixture_plugin.calls["item"] == 1
    await post(client, "query($id: ID!) { item(id: $id) { id name } }", {"id": "2"})
    assert fixture_plugin.calls["item"] == 2


async def test_errors_are_never_cached(client, fixture_plugin):
    for _ in range(2):
        _, body = await post(client, "{ failing }")
        assert body["errors"][0]["message"] == "nope"
    assert fixture_plugin.calls["failing"] == 2


async def test_max_age_zero_and_expiry(client, fixture_plugin):
    await post(client, "{ never }")
    await post(client, "{ never }")
    assert fixture_plugin.calls["never"] == 2
    _, b1 = await post(client, "{ short }")
    _, b2 = await post(client, "{ short }")
    assert b1 == b2
    await asyncio.sleep(2.1)
    _, b3 = await post(client, "{ short }")
    assert b3["data"]["short"] == 2


async def test_policy_is_the_minimum_over_fields(client):
    resp, _ = await get(client, "{ short items { id } }")
    assert resp.headers["Cache-Control"] == "max-age=2, public"
    resp, _ = await get(client, "{ items { id } }")
    assert resp.headers["Cache-Control"] == "max-age=30, public"


async def test_private_field_never_crosses_identities(client, fixture_plugin):
    q = "{ items { id secret } }"
    _, alice = await post(client, q, user="alice")
    _, bob = await post(client, q, user="bob")
    _, alice2 = await post(client, q, user="alice")
    assert alice["data"]["items"][0]["secret"] == "secret of alice"
    assert bob["data"]["items"][0]["secret"] == "secret of bob"
    assert alice2 == alice
    assert fixture_plugin.calls["items"] == 2
    # Anonymous callers get no private entry at all.
    await post(client, q)
    await post(client, q)
    assert fixture_plugin.calls["items"] == 4
    resp, _ = await get(client, q, user="alice")
    assert resp.headers["Cache-Control"] == "max-age=30, private"
    assert "Cache-Tag" not in resp.headers


async def test_private_root_field(client, fixture_plugin):
    _, a = await post(client, "{ me }", user="alice")
    _, b = await post(client, "{ me }", user="bob")
    assert (a["data"]["me"], b["data"]["me"]) == ("alice", "bob")


async def test_resolver_made_private_at_run_time(client, fixture_plugin):
    q = "{ dynamicPrivate }"
    _, a = await post(client, q, user="alice")
    _, b = await post(client, q, user="bob")
    _, a2 = await post(client, q, user="alice")
    _, b2 = await post(client, q, user="bob")
    assert (a["data"]["dynamicPrivate"], b["data"]["dynamicPrivate"], a2["data"]["dynamicPrivate"], b2["data"]["dynamicPrivate"]) == ("for alice", "for bob", "for alice", "for bob")
    assert fixture_plugin.calls["dynamicPrivate"] == 2
    _, anon = await post(client, q)
    assert anon["data"]["dynamicPrivate"] == "for None" and fixture_plugin.calls["dynamicPrivate"] == 3
    resp, _ = await get(client, q, user="carol")
    assert resp.headers["Cache-Control"] == "max-age=10, private"


async def test_unhinted_fields_are_per_identity_for_identified_callers(client, fixture_plugin):
    await post(client, "{ unhinted }", user="alice")
    _, b = await post(client, "{ unhinted }", user="bob")
    assert b["data"]["unhinted"] == 2
    await post(client, "{ unhinted }")
    await post(client, "{ unhinted }")
    assert fixture_plugin.calls["unhinted"] == 3


async def test_response_over_max_entry_size_is_not_stored(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"cache": {"queryCache": {"max_entry_size": "1KB"}}}, plugins=[fixture_plugin])
    client = await aiohttp_client(app)
    for _ in range(2):
        resp, body = await post(client, "{ big(size: 5000) }")
        assert len(body["data"]["big"]) == 5000 and resp.headers["X-Cache"] == "MISS"
    assert fixture_plugin.calls["big"] == 2
    await post(client, "{ big(size: 10) }")
    await post(client, "{ big(size: 10) }")
    assert fixture_plugin.calls["big"] == 3
    assert metrics(app)["response"]["too_large"] == 2


async def test_mutations_are_not_cached_and_invalidate_what_they_return(client, fixture_plugin):
    await post(client, ITEMS)
    await post(client, "{ item(id: 2) { id name } }")
    await post(client, "{ item(id: 3) { id name } }")
    m = "mutation { renameItem(id: 2, name: \"two\") { id name } }"
    _, r = await post(client, m)
    assert r["data"]["renameItem"] == {"id": "2", "name": "two"}
    _, items = await post(client, ITEMS)
    assert items["data"]["items"][1]["name"] == "two"
    _, item = await post(client, "{ item(id: 2) { id name } }")
    assert item["data"]["item"]["name"] == "two"
    await post(client, "{ item(id: 3) { id name } }")
    assert (fixture_plugin.calls["items"], fixture_plugin.calls["item"]) == (2, 3)  # item 3 stayed cached


async def test_plugin_invalidate_and_null_results(client, fixture_plugin):
    _, gone = await post(client, "{ item(id: 9) { id } }")
    assert gone["data"]["item"] is None
    fixture_plugin.items["9"] = {"id": "9", "name": "nine", "secret": None}
    await post(client, "mutation { renameItem(id: 9, name: \"9\") { id } }")
    _, found = await post(client, "{ item(id: 9) { id } }")
    assert found["data"]["item"] == {"id": "9"}
    await post(client, "mutation { dropItem(id: 9) }")
    _, gone = await post(client, "{ item(id: 9) { id } }")
    assert gone["data"]["item"] is None


async def test_stampede_one_computation(client, fixture_plugin):
    results = await asyncio.gather(*(post(client, "{ slow }") for _ in range(10)))
    assert {b["data"]["slow"] for _, b in results} == {1}
    assert fixture_plugin.calls["slow"] == 1


async def test_get_headers_etag_and_304(client, fixture_plugin):
    resp, body = await get(client, ITEMS)
    assert resp.status == 200
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"] == "max-age=30, public"
    assert set(resp.headers["Cache-Tag"].split(",")) == {"Item:1", "Item:2", "Item:3", "Item"}
    assert set(resp.headers["Surrogate-Key"].split(" ")) == {"Item:1", "Item:2", "Item:3", "Item"}
    resp2, body2 = await get(client, ITEMS, **{"If-None-Match": etag})
    assert resp2.status == 304 and body2 == b""
    assert resp2.headers["ETag"] == etag
    resp3, body3 = await get(client, ITEMS, **{"If-None-Match": '"other"'})
    assert resp3.status == 200 and body3 == body
    assert fixture_plugin.calls["items"] == 1
    # Not cacheable: no-store, no ETag.
    resp4, _ = await get(client, "{ never }")
    assert resp4.headers["Cache-Control"] == "no-store" and "ETag" not in resp4.headers
    # POST carries no Cache-Control (no intermediary caches it).
    resp5, _ = await post(client, ITEMS)
    assert "Cache-Control" not in resp5.headers


async def test_disabled_query_cache_still_invalidates(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"cache": {"queryCache": {"enabled": False}}}, plugins=[fixture_plugin])
    client = await aiohttp_client(app)
    await post(client, ITEMS)
    await post(client, ITEMS)
    assert fixture_plugin.calls["items"] == 2


async def test_excluded_root_fields_are_never_cached(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"cache": {"queryCache": {"exclude": ["Query.items"]}}}, plugins=[fixture_plugin])
    client = await aiohttp_client(app)
    for _ in range(2):
        await post(client, "{ items { id } me }")
        await post(client, "{ slow }")
    assert (fixture_plugin.calls["items"], fixture_plugin.calls["slow"]) == (2, 1)


async def test_get_hit_of_an_entry_stored_by_post_carries_the_cdn_tags(client, fixture_plugin):
    await post(client, ITEMS)  # stored from a POST: no headers were computed then
    resp, _ = await get(client, ITEMS)
    assert resp.headers["X-Cache"] == "HIT"
    assert set(resp.headers["Cache-Tag"].split(",")) == {"Item:1", "Item:2", "Item:3", "Item"}
    assert fixture_plugin.calls["items"] == 1


async def test_a_request_leaves_no_reference_cycle(client, fixture_plugin):
    # The context holds the request's loaders; a strong reference back made
    # each request (aiohttp's Request included) garbage for the collector.
    import gc
    import weakref

    from plugboard.plugins.cache.loaders import Loaders

    contexts = []
    original = Loaders.__init__

    def spy(self, context):
        contexts.append(weakref.ref(context))
        original(self, context)

    gc.collect()
    gc.disable()
    try:
        Loaders.__init__ = spy
        try:
            await post(client, ITEMS)
            await post(client, "{ item(id: 1) { id name } }")
        finally:
            Loaders.__init__ = original
        assert len(contexts) == 2 and all(ref() is None for ref in contexts)
    finally:
        gc.enable()


async def test_a_full_store_keeps_its_entries_from_queries_asked_once(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"services": {"cache": {"provider": "memory", "max_entries": 2}}}, plugins=[fixture_plugin])
    client = await aiohttp_client(app)
    item = "query($id: ID!) { item(id: $id) { id name } }"
    await post(client, item, {"id": "1"})
    await post(client, item, {"id": "2"})  # both stored: the store had room; now it is full
    resp, body = await get(client, item, {"id": "3"})  # never missed before: answered, not stored
    assert resp.status == 200 and b"item 3" in body and resp.headers["X-Cache"] == "MISS"
    # Still cacheable by HTTP caches and CDNs: only our store turned it away.
    assert resp.headers["Cache-Control"].endswith(", public") and resp.headers["ETag"]
    assert "Item:3" in resp.headers["Cache-Tag"].split(",")
    for id in ("1", "2"):
        resp, _ = await post(client, item, {"id": id})
        assert resp.headers["X-Cache"] == "HIT"  # nothing was evicted for item 3
    assert fixture_plugin.calls["item"] == 3
    resp, _ = await post(client, item, {"id": "3"})  # its second miss: stored, evicting the oldest
    resp, _ = await post(client, item, {"id": "3"})
    assert resp.headers["X-Cache"] == "HIT" and fixture_plugin.calls["item"] == 4
    resp, _ = await post(client, item, {"id": "1"})
    assert resp.headers["X-Cache"] == "MISS"
    assert metrics(app)["memory"]["not_admitted"] == 2  # item 3, then item 1 (evicted, then missed while full)


async def test_a_full_store_stores_a_new_key_that_concurrent_requests_wait_for(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"services": {"cache": {"provider": "memory", "max_entries": 1}}}, plugins=[fixture_plugin])
    client = await aiohttp_client(app)
    await post(client, ITEMS)  # the store is full
    results = await asyncio.gather(*(post(client, "{ slow }") for _ in range(5)))
    assert {b["data"]["slow"] for _, b in results} == {1}
    resp, _ = await post(client, "{ slow }")
    assert resp.headers["X-Cache"] == "HIT" and fixture_plugin.calls["slow"] == 1
