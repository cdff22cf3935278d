"""Finding 3 (the books example): amplification by nesting and aliases; who may write.

The review created 20 books anonymously, then asked for
``books { author { books { ... } } }`` (9.7 s, 2 MB) and for 2,000 ``books``
aliases (2,000 SQL queries). The structural limits refuse both before any
resolver runs; the books example's mutations now need an identity and bound
their string lengths.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hardening_kit import GRAPHQL_RESPONSE, bearer_auth_plugin, error_code, post, while_responsive

from plugboard import keys

CREATE = "mutation($t: String!, $a: String!) { createBook(input: {title: $t, authorName: $a}) { id } }"


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app({"plugins": ["books"]}, plugins=[bearer_auth_plugin()]))


async def as_alice(client, query, variables=None):
    resp = await client.post("/graphql", json={"query": query, "variables": variables}, headers={"Accept": GRAPHQL_RESPONSE, "Authorization": "Bearer alice"})
    return resp.status, await resp.json()


def nested_books(levels: int) -> str:
    text = "id"
    for _ in range(levels):
        text = f"books {{ title author {{ name {text} }} }}"
    return "{ authors { " + text + " } }"


@pytest.fixture
def sql_statements(client):
    count = [0]

    def before(*_args):
        count[0] += 1

    engine = client.app[keys.RECORDS].engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", before)
    yield count
    sa.event.remove(engine, "before_cursor_execute", before)


async def test_anonymous_mutations_are_refused(client):
    status, body = await post(client, CREATE, variables={"t": "Dune", "a": "Frank Herbert"})
    assert error_code(body) == "UNAUTHENTICATED" and body["data"] is None
    status, body = await post(client, 'mutation { updateBook(id: "1", input: {title: "x"}) { id } }')
    assert error_code(body) == "UNAUTHENTICATED"
    status, body = await as_alice(client, CREATE, {"t": "Dune", "a": "Frank Herbert"})
    assert status == 200 and body["data"]["createBook"]["id"], body


@pytest.mark.parametrize("field, value", [("t", "x" * 201), ("a", "y" * 101), ("t", " "), ("a", "")])
async def test_string_lengths_are_bounded(client, field, value):
    variables = {"t": "Dune", "a": "Frank Herbert", field: value}
    status, body = await as_alice(client, CREATE, variables)
    assert error_code(body) == "BAD_USER_INPUT", body


async def test_nesting_is_refused_before_any_resolver(client, sql_statements):
    for i in range(20):
        assert (await as_alice(client, CREATE, {"t": f"Book {i}", "a": f"Author {i % 3}"}))[0] == 200
    assert (await post(client, nested_books(3)))[0] == 200  # a reasonable depth answers
    sql_statements[0] = 0
    (status, body), slowest = await while_responsive(client, lambda: post(client, nested_books(10)))
    assert (status, error_code(body)) == (400, "QUERY_TOO_DEEP"), body
    assert sql_statements[0] == 0 and slowest < 0.1


async def test_two_thousand_aliases_run_no_query(client, sql_statements):
    document = "{ " + " ".join(f"b{i}: books {{ id title }}" for i in range(2_000)) + " }"
    (status, body), slowest = await while_responsive(client, lambda: post(client, document))
    assert status == 400 and error_code(body) in ("TOO_MANY_TOKENS", "TOO_MANY_ALIASES"), body
    assert sql_statements[0] == 0 and slowest < 0.1
    short = "{ " + " ".join(f"b{i}: books {{ id }}" for i in range(31)) + " }"
    assert (await post(client, short))[1]["errors"][0]["extensions"] == {"code": "TOO_MANY_ALIASES", "limit": 30, "actual": 31}
    assert sql_statements[0] == 0
