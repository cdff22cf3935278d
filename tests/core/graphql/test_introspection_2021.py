"""Issue 10 (1): introspection to the October 2021 spec, as graphql-js 16 and gql 4 ask for it.

The query text is graphql-js 16's ``getIntrospectionQuery({descriptions,
inputValueDeprecation, specifiedByUrl, directiveIsRepeatable})``, generated
with Node's ``graphql`` 16.15 and checked in beside the hardening tests'
June 2018 one. ``gql`` 4 fetches the schema itself (it sends the same
options), builds a client schema with graphql-core and validates documents
locally; graphql-core's ``buildClientSchema`` -> ``printSchema`` is compared
with what ``plugboard schema`` prints.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from graphql import build_client_schema, build_schema, lexicographic_sort_schema, print_schema

from plugboard import hookimpl
from plugboard.testing import clean_env, write_project

QUERY_2021 = (Path(__file__).parents[1] / "hardening" / "introspection_query_2021.graphql").read_text()
QUERY_2018 = (Path(__file__).parents[1] / "hardening" / "introspection_query.graphql").read_text()

SDL = '''
input Filter {
  title: String
  year: Int @deprecated(reason: "use title")
}
extend type Query {
  search(filter: Filter, limit: Int @deprecated(reason: "pages are fixed"), page: Int): [String!]!
}
'''

# Served by Tartiflette, not part of the composed SDL ``plugboard schema`` prints.
TARTIFLETTE_BUILTINS = '''
"""Directs the executor to hide the element on introspection queries."""
directive @nonIntrospectable on FIELD_DEFINITION | SCHEMA
"""The `Date` scalar type represents a date object"""
scalar Date
"""The `Time` scalar type represents a time object"""
scalar Time
'''


def _plugin():
    @hookimpl
    def plugboard_schema():
        return SDL

    @hookimpl
    def plugboard_resolvers():
        async def search(parent, args, context, info):
            return [str(sorted(args))]

        return {"Query.search": search}

    return types.SimpleNamespace(plugboard_schema=plugboard_schema, plugboard_resolvers=plugboard_resolvers)


@pytest.fixture
async def client(plugboard_client):
    return await plugboard_client({"plugins": ["books"]}, plugins=[_plugin()])


async def introspect(client, query):
    body = await client.gql(query)
    assert "errors" not in body, body["errors"]
    return body["data"]


def by_name(items, name):
    return next(i for i in items if i["name"] == name)


async def test_graphql_js_16_query_with_every_option(client):
    data = await introspect(client, QUERY_2021)
    schema = data["__schema"]
    query = by_name(schema["types"], "Query")
    args = by_name(query["fields"], "search")["args"]
    assert by_name(args, "limit") | {"type": None} == {
        "name": "limit", "description": None, "type": None, "defaultValue": None,
        "isDeprecated": True, "deprecationReason": "pages are fixed",
    }
    assert by_name(args, "page")["isDeprecated"] is False
    year = by_name(by_name(schema["types"], "Filter")["inputFields"], "year")
    assert (year["isDeprecated"], year["deprecationReason"]) == (True, "use title")
    assert by_name(schema["types"], "Upload")["specifiedByURL"] == "https://github.com/jaydenseric/graphql-multipart-request-spec"
    assert by_name(schema["types"], "String")["specifiedByURL"] is None
    deprecated = by_name(schema["directives"], "deprecated")
    assert deprecated["isRepeatable"] is False
    assert set(deprecated["locations"]) == {"FIELD_DEFINITION", "ARGUMENT_DEFINITION", "INPUT_FIELD_DEFINITION", "ENUM_VALUE"}
    assert by_name(schema["directives"], "specifiedBy")["locations"] == ["SCALAR"]


async def test_june_2018_query_still_answers(client):
    data = await introspect(client, QUERY_2018)
    assert data["__schema"]["queryType"]["name"] == "Query"


async def test_include_deprecated_defaults_to_false(client):
    data = await introspect(
        client,
        '{ __type(name: "Query") { fields { name args { name } all: args(includeDeprecated: true) { name } } } '
        ' f: __type(name: "Filter") { inputFields { name } all: inputFields(includeDeprecated: true) { name } } }',
    )
    search = by_name(data["__type"]["fields"], "search")
    assert [a["name"] for a in search["args"]] == ["filter", "page"]
    assert [a["name"] for a in search["all"]] == ["filter", "limit", "page"]
    assert [f["name"] for f in data["f"]["inputFields"]] == ["title"]
    assert [f["name"] for f in data["f"]["all"]] == ["title", "year"]


@pytest.mark.parametrize(
    "query",
    [
        '{ __type(name: "Query") { fields { args(bogus: true) { name } } } }',
        "{ __schema { directives { args(includeDeprecated: 1) { name } } } }",
        "{ __schema { directives { isRepeatable(x: true) } } }",
    ],
)
async def test_unknown_or_bad_introspection_arguments_are_validation_errors(client, query):
    body = await client.gql(query, status=None)
    assert "data" not in body and body["errors"], body
    assert all("path" not in e for e in body["errors"]), body


async def test_gql_4_fetches_the_schema_and_validates_locally(client):
    url = str(client.make_url("/graphql"))
    transport = AIOHTTPTransport(url=url)
    gql_client = Client(transport=transport, fetch_schema_from_transport=True)
    async with gql_client as session:
        schema = gql_client.schema
        assert schema is not None and schema.get_type("Book") is not None
        assert schema.get_type("Query").fields["search"].args["limit"].deprecation_reason == "pages are fixed"
        result = await session.execute(gql("{ books(first: 1) { id } plugboardVersion }"))
        assert result == {"books": [], "plugboardVersion": "0.1.0"}
        # A document the schema does not allow fails in the client, before sending.
        with pytest.raises(Exception, match="Cannot query field 'nope' on type 'Book'"):
            await session.execute(gql("{ books { nope } }"))


async def test_client_schema_prints_as_plugboard_schema(plugboard_client, tmp_path):
    root = write_project(tmp_path / "proj", {"plugins": ["books"]})
    done = subprocess.run(
        [sys.executable, "-m", "plugboard.cli", "schema", "--root", str(root)],
        capture_output=True, text=True, timeout=120, env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    books = await plugboard_client({"plugins": ["books"]})
    data = await introspect(books, QUERY_2021)
    printed = print_schema(lexicographic_sort_schema(build_client_schema(data)))
    served = build_schema(done.stdout + TARTIFLETTE_BUILTINS)
    assert printed == print_schema(lexicographic_sort_schema(served))

