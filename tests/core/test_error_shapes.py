"""Issue 10 (2): errors shaped as the GraphQL spec has them.

A variable that does not coerce is a request error: no ``data`` key, no
``path``, 400 under ``application/graphql-response+json``. Validation errors
have ``locations``, the rule in ``extensions`` and ``GRAPHQL_VALIDATION_FAILED``,
parse errors ``GRAPHQL_PARSE_FAILED`` and the location; neither has a ``path``. No error
anywhere carries ``"path": null`` (schemathesis groups errors by it).
"""

from __future__ import annotations

import types

import pytest

from plugboard import hookimpl

GRAPHQL_RESPONSE = "application/graphql-response+json"


def _failing_plugin():
    @hookimpl
    def plugboard_schema():
        return "extend type Query { fails: String  mustFail: String! }"

    @hookimpl
    def plugboard_resolvers():
        async def fails(parent, args, context, info):
            raise ValueError("boom")

        return {"Query.fails": fails, "Query.mustFail": fails}

    return types.SimpleNamespace(plugboard_schema=plugboard_schema, plugboard_resolvers=plugboard_resolvers)


@pytest.fixture
async def client(plugboard_client):
    return await plugboard_client({"plugins": ["books"]}, plugins=[_failing_plugin()])


async def post(client, query, variables=None, accept=GRAPHQL_RESPONSE):
    resp = await client.post("/graphql", json={"query": query, "variables": variables}, headers={"Accept": accept})
    text = await resp.text()
    assert '"path":null' not in text.replace(" ", ""), text
    return resp.status, await resp.json(content_type=None)


BAD_VARIABLES = [
    ("query($id: ID!) { book(id: $id) { id } }", {"id": {"a": 1}}),
    ("query($id: ID!) { book(id: $id) { id } }", {}),
    ("query($n: Int) { books(first: $n) { id } }", {"n": "ten"}),
    ("query($n: Int) { books(first: $n) { id } }", {"n": 2**40}),
]


@pytest.mark.parametrize(("query", "variables"), BAD_VARIABLES)
async def test_variable_coercion_failure_is_a_request_error(client, query, variables):
    status, body = await post(client, query, variables)
    assert status == 400 and "data" not in body, body
    [error] = body["errors"]
    assert "path" not in error and error["locations"] and error["extensions"]["code"] == "BAD_USER_INPUT", error


async def test_variable_coercion_failure_under_application_json_is_200(client):
    status, body = await post(client, *BAD_VARIABLES[0], accept="application/json")
    assert status == 200 and "data" not in body and "path" not in body["errors"][0], body


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("{ book { id } }", "5.4.2.1"),  # the "Missing mandatory argument"
        ('{ books(first: "x") { id } }', "5.6.1"),
        ("{ books { nope } }", "5.3.1"),
        ("{ book(id: 1, id: 2) { id } }", "5.4.2"),
        ("query Q($x: Int) { books { id } }", "5.8.4"),
    ],
)
async def test_validation_errors_have_no_path(client, query, rule):
    status, body = await post(client, query)
    assert status == 400 and "data" not in body, body
    assert all("path" not in e and e["locations"] for e in body["errors"]), body
    assert rule in [e["extensions"]["rule"] for e in body["errors"]], body
    assert all(e["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED" for e in body["errors"]), body


@pytest.mark.parametrize(
    ("query", "line", "column"),
    [
        ("{ books { id }", 1, 15),
        ("{ books @@ }", 1, 10),
        ("\n\n  { books { id } } }", 3, 20),
        ("query { books(first: ) { id } }", 1, 22),
    ],
)
async def test_parse_errors_have_a_code_and_the_location(client, query, line, column):
    status, body = await post(client, query)
    assert status == 400 and "data" not in body, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}, error
    assert error["locations"] == [{"line": line, "column": column}] and "path" not in error, error
    assert error["message"].startswith(f"{line}.{column}"), error


async def test_execution_errors_keep_their_path(client):
    status, body = await post(client, "{ plugboardVersion fails }")
    assert status == 200 and body["data"] == {"plugboardVersion": "0.1.0", "fails": None}, body
    assert body["errors"][0]["path"] == ["fails"]
    status, body = await post(client, "{ mustFail }")
    assert status == 200 and body["data"] is None and body["errors"][0]["path"] == ["mustFail"], body


async def test_subscription_with_bad_variables_over_graphql_transport_ws(plugboard_client):
    client = await plugboard_client({"plugins": ["books", "realtime"]})
    ws = await client.ws()
    await ws.subscribe("s1", "subscription($id: ID) { bookUpdated(id: $id) { id } }", {"id": {"a": 1}})
    message = await ws.receive_message()
    assert message["type"] == "next" and "data" not in message["payload"], message
    assert all("path" not in e for e in message["payload"]["errors"]), message
    assert (await ws.receive_message())["type"] == "complete"
