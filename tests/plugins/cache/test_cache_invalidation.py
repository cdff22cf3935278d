"""invalidateCache for admins, plugin invalidate(), bad tags, memory stores kept in step through pubsub."""

from __future__ import annotations

import asyncio

import pytest

from cache_testkit import Fixture, make_app, post
from plugboard.plugins.cache import invalidate, metrics

ADMIN = {"Authorization": "Bearer op-token"}
INVALIDATE = "mutation($tags: [String!]) { invalidateCache(tags: $tags) }"


@pytest.fixture
async def admin_client(aiohttp_client, tmp_path, fixture_plugin):
    app = make_app(tmp_path, {"server": {"admin_token": "op-token"}}, plugins=[fixture_plugin])
    return await aiohttp_client(app)


async def test_invalidate_cache_by_entity_and_list(admin_client, fixture_plugin):
    client = admin_client
    await post(client, "{ items { id name } }")
    await post(client, "{ item(id: 1) { id name } }")
    await post(client, "{ item(id: 2) { id name } }")
    _, r = await post(client, INVALIDATE, {"tags": ["Item:1"]}, **ADMIN)
    assert r == {"data": {"invalidateCache": 2}}  # items (holds Item:1) and item(id: 1)
    await post(client, "{ item(id: 2) { id name } }")
    await post(client, "{ item(id: 1) { id name } }")
    assert fixture_plugin.calls["item"] == 3
    await post(client, "{ items { id name } }")
    _, r = await post(client, INVALIDATE, {"tags": ["Item"]}, **ADMIN)
    assert r["data"]["invalidateCache"] == 1  # the list entry; single items carry entity tags only
    assert metrics(client.app)["memory"]["invalidations"] == 3


@pytest.mark.parametrize("tags", [["Book 1"], ["a,b"], ["x" * 129], [""], ["Bo\nok"], ["ü"]])
async def test_bad_tags_are_refused(admin_client, tags):
    _, r = await post(admin_client, INVALIDATE, {"tags": tags}, **ADMIN)
    assert r["data"] is None and r["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "invalid cache tag" in r["errors"][0]["message"]
    with pytest.raises(ValueError, match="invalid cache tag"):
        await invalidate(admin_client.app, tags)


async def test_invalidate_cache_needs_admin(admin_client):
    _, r = await post(admin_client, INVALIDATE, {"tags": ["Item"]})
    assert r["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    _, r = await post(admin_client, INVALIDATE, {"tags": ["Item"]}, Authorization="Bearer nope")
    assert r["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    _, r = await post(admin_client, INVALIDATE, {"tags": []}, **ADMIN)
    assert r["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_two_apps_with_memory_stores_share_invalidations(aiohttp_client, tmp_path, redis_url):
    fa, fb = Fixture(), Fixture()
    data = {"redis": {"url": redis_url}, "services": {"pubsub": {"provider": "redis"}, "cache": {"provider": "memory"}}}
    a = await aiohttp_client(make_app(tmp_path / "a", data, plugins=[fa]))
    b = await aiohttp_client(make_app(tmp_path / "b", data, plugins=[fb]))
    for client in (a, b):
        await post(client, "{ item(id: 1) { id name } }")
        await post(client, "{ item(id: 1) { id name } }")
    assert (fa.calls["item"], fb.calls["item"]) == (1, 1)
    await post(b, 'mutation { renameItem(id: 1, name: "one") { id name } }')
    await asyncio.sleep(0.3)
    await post(a, "{ item(id: 1) { id name } }")
    assert fa.calls["item"] == 2


def test_ids_a_tag_cannot_carry_tag_their_type():
    from plugboard.plugins.cache.tags import check_tags, tags_of

    plan = (("items", "Item", "Item:", True, "id", False, (), {}),)
    entities, types = tags_of(plan, {"items": [{"id": 7}, {"id": "a b"}, {"id": "ü"}, {"id": "x" * 200}, {"id": "ok-1"}, {"id": 1.5}]})
    assert entities == {"Item:7", "Item:ok-1", "Item:1.5"} and types == {"Item"}
    check_tags(entities | types)


def test_a_page_of_ids_is_tagged_once_and_odd_pages_item_by_item():
    from plugboard.plugins.cache.tags import tags_of

    pages: dict = {}
    plan = (("items", "Item", "Item:", True, "id", False, (("owner", "User", "User:", False, "id", False, (), {}),), pages),)
    data = {"items": [{"id": "1", "owner": {"id": "u1"}}, {"id": "2", "owner": None}]}
    expected = ({"Item:1", "Item:2", "User:u1"}, {"Item", "User"})
    assert tags_of(plan, data) == expected
    assert pages == {("1", "2"): frozenset({"Item:1", "Item:2"})}
    assert tags_of(plan, data) == expected  # from the kept page
    # An id "12" + "" must not pass as the alphanumeric page "12": checked per id.
    odd = {"items": [{"id": "12"}, {"id": ""}, {"id": 3}, {"id": ["x"]}]}
    assert tags_of(plan, odd) == ({"Item:12", "Item:3"}, {"Item", "User"})  # no owner: its type


def test_equal_responses_get_one_tag_set_for_the_store():
    from plugboard.plugins.cache.tags import entry_tags, tags_of

    plan = (("items", "Item", "Item:", True, "id", False, (("owner", "User", "User:", False, "id", False, (), {}),), {}),)
    memo: dict = {}
    first = {"items": [{"id": "1", "owner": {"id": "u1"}}, {"id": "2", "owner": {}}]}
    again = {"items": [{"id": "1", "owner": {"id": "u1"}}, {"id": "2", "owner": {}}]}
    tags = entry_tags(plan, first, memo)
    entities, types = tags_of(plan, first)
    assert tags == entities | types == {"Item", "Item:1", "Item:2", "User", "User:u1"}  # {} has no id: its type
    assert entry_tags(plan, again, memo) is tags
    other = entry_tags(plan, {"items": [{"id": "3", "owner": None}]}, memo)
    assert other == {"Item", "Item:3", "User"} and len(memo) == 2
    for n in range(40):  # whatever clients ask, the memo stays small
        entry_tags(plan, {"items": [{"id": str(n), "owner": {"id": "u1"}}]}, memo)
    assert len(memo) <= 32
