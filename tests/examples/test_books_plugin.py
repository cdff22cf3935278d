"""The books example plugin, enabled purely through settings, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools

import pytest

from plugboard.app import create_app
from plugboard.settings import Settings
from plugboard.testing import gql as kit_gql

# Mutations need an identity or the operator's token (see test_books_writers).
TOKEN = "books-operator"
gql = functools.partial(kit_gql, token=TOKEN)


@pytest.fixture(params=["sqlite", "postgresql"])
async def client(request, tmp_path, plugboard_client):
    data = {"plugins": ["books"], "server": {"admin_token": TOKEN}}
    if request.param == "postgresql":
        data["records"] = {"url": request.getfixturevalue("postgres_url")}
    (tmp_path / "settings.yaml").write_text("")
    client = await plugboard_client(data)
    yield client
    await client.close()  # release the pool before postgres_url drops the database


CREATE = "mutation($t: String!, $a: String!, $y: Int) { createBook(input: {title: $t, authorName: $a, publishedYear: $y}) { id title publishedYear author { id name } createdAt } }"


async def test_create_list_update(client):
    first = (await gql(client, CREATE, {"t": "Dune", "a": "Frank Herbert", "y": 1965}))["data"]["createBook"]
    second = (await gql(client, CREATE, {"t": "Children of Dune", "a": "Frank Herbert", "y": 1976}))["data"]["createBook"]
    third = (await gql(client, CREATE, {"t": "Neuromancer", "a": "William Gibson"}))["data"]["createBook"]
    assert first["author"] == second["author"]
    assert third["publishedYear"] is None and "T" in first["createdAt"]

    page = await gql(client, "{ books(first: 2) { id title author { name } } }")
    assert [b["title"] for b in page["data"]["books"]] == ["Dune", "Children of Dune"]
    rest = await gql(client, "query($a: ID) { books(first: 5, after: $a) { title } }", {"a": second["id"]})
    assert rest["data"]["books"] == [{"title": "Neuromancer"}]

    updated = await gql(
        client,
        "mutation($id: ID!) { updateBook(id: $id, input: {title: \"Dune (1965)\", authorName: \"F. Herbert\"}) { title author { name books { title } } } }",
        {"id": first["id"]},
    )
    assert updated["data"]["updateBook"] == {"title": "Dune (1965)", "author": {"name": "F. Herbert", "books": [{"title": "Dune (1965)"}]}}
    one = await gql(client, "query($id: ID!) { book(id: $id) { title } }", {"id": first["id"]})
    assert one["data"]["book"] == {"title": "Dune (1965)"}
    authors = await gql(client, "{ authors { name } }")
    assert [a["name"] for a in authors["data"]["authors"]] == ["Frank Herbert", "William Gibson", "F. Herbert"]


async def test_bad_input(client):
    missing = await gql(client, 'mutation { updateBook(id: "999", input: {title: "x"}) { id } }')
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    bad_id = await gql(client, '{ book(id: "abc") { id } }')
    assert bad_id["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # Past a BIGINT (found by the fuzz test: SQLite raised OverflowError, a 500).
    huge = await gql(client, '{ books(after: "9223372036854775808") { id } book(id: "-1") { id } }')
    assert [e["extensions"]["code"] for e in huge["errors"]] == ["BAD_USER_INPUT", "BAD_USER_INPUT"]
    too_many = await gql(client, "{ books(first: 1000) { id } }")
    assert "first must be between 0 and 100" in too_many["errors"][0]["message"]
    empty = await gql(client, CREATE, {"t": "  ", "a": "Someone"})
    assert empty["errors"][0]["message"] == "title must not be empty"
    assert (await gql(client, "{ books { id } }"))["data"]["books"] == []
    long_title = await gql(client, CREATE, {"t": "x" * 201, "a": "Someone"})
    assert long_title["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "maxLength": 200}
    long_name = await gql(client, CREATE, {"t": "Fine", "a": "y" * 101})
    assert long_name["errors"][0]["message"] == "authorName is longer than 100 characters"
    assert (await gql(client, "{ books { id } }"))["data"]["books"] == []


async def test_mutations_need_an_identity(client):
    resp = await client.post("/graphql", json={"query": CREATE, "variables": {"t": "Dune", "a": "Frank Herbert"}})
    body = await resp.json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" and body["data"] is None
    resp = await client.post("/graphql", json={"query": CREATE, "variables": {"t": "Dune", "a": "F"}}, headers={"Authorization": "Bearer wrong"})
    assert (await resp.json())["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await gql(client, "{ books { id } }"))["data"]["books"] == []


async def test_plugin_settings_are_validated(tmp_path):
    from plugboard.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        create_app(Settings.from_mapping({"plugins": ["books"], "books": {"max_page_size": 0, "colour": "red"}}, root=tmp_path))
    text = str(e.value)
    assert "books.max_page_size = 0" in text and "expected a positive number" in text
    assert "books.colour" in text and "unknown key" in text
