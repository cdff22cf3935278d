"""The planned executor answers byte for byte as Tartiflette's executor does.

Each test serves one library plugin from two apps (``graphql.executor:
planned`` and ``tartiflette``) and compares the raw HTTP bodies: data, error
messages, ``path``, ``locations``, null propagation, masking, the order of
errors under every concurrency setting, the ``info`` resolvers see, mutations
run serially, subscription events, and the documents left to Tartiflette.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from core_testkit import make_plugin
from executors import both, planned_was_used
from plugboard import keys
from plugboard.graphql.differential import ExecutorMismatch, compare_results
from plugboard.graphql.errors import GraphQLError
from plugboard.testing import subscribe

SDL = """
directive @shout on FIELD_DEFINITION
interface Node { id: ID! }
type Author implements Node { id: ID! name: String! books: [Book!]! }
type Book implements Node {
  id: ID!
  title: String!
  author: Author
  rating: Float
  tags: [String]
  kind: Kind!
  price: Money
  items: Int
}
enum Kind { NOVEL POEM }
union Item = Author | Book
scalar Money
type Thing { plain: String computed: String broken: String items: Int keys: String }
type Probe { value: JSON again: JSON }
input ProbeInput { a: Int = 1, b: [String!] }
extend type Query {
  lib_books(first: Int = 3, broken: Boolean = false): [Book!]!
  lib_book(id: ID!): Book
  lib_node(id: ID!): Node
  lib_items: [Item]
  lib_bad_type: Item
  lib_strict: [Book!]
  lib_loose: [Book]
  lib_int_items: [Int!]
  lib_bad_enum: Kind
  lib_bad_scalar: Int
  lib_not_list: [Int]
  lib_required: String!
  lib_masked: String
  lib_refused: String
  lib_probe(arg: Int, input: ProbeInput, list: [Int]): Probe
  lib_slow(ms: Int!, fail: Boolean = false, empty: Boolean = false): Int!
  lib_slow_nullable(ms: Int!, fail: Boolean = false): Int
  lib_things: [Thing]
  lib_shout: String @shout
  lib_mutate(arg: Int, list: [Int]): JSON
}
extend type Mutation { lib_add(n: Int!): [Int!]! }
extend type Subscription { lib_ticks(n: Int!): Book }
"""

AUTHORS = {"1": {"id": "1", "name": "Ursula"}, "2": {"id": "2", "name": "Italo"}}
BOOKS = [
    {"id": str(i), "title": f"Book {i}", "author_id": "1" if i % 2 else "2", "rating": i / 2 if i % 3 else None,
     "tags": ["a", None, "c"] if i % 2 else None, "kind": "NOVEL" if i % 2 else "POEM", "price": i * 100}
    for i in range(1, 8)
]


class Money:
    def coerce_output(self, value):
        return f"€{value / 100:.2f}"

    def coerce_input(self, value):
        return int(value)

    def parse_literal(self, ast):
        return int(ast.value)


class Shout:
    async def on_field_execution(self, directive_args, next_resolver, parent, args, ctx, info):
        return (await next_resolver(parent, args, ctx, info)).upper()


class Thing:
    plain = "attribute"
    items = 3

    @property
    def computed(self):
        return "property"

    @property
    def broken(self):
        raise RuntimeError("property failed")


def library_plugin(log: list | None = None):
    log = [] if log is None else log

    async def books(parent, args, context, info):
        out = [dict(b) for b in BOOKS[: args["first"]]]
        if args["broken"]:
            out[1]["title"] = None
        return out

    async def author(parent, args, context, info):
        return AUTHORS.get(parent["author_id"])

    async def author_books(parent, args, context, info):
        return [b for b in BOOKS if b["author_id"] == parent["id"]]

    async def book(parent, args, context, info):
        return next((dict(b) for b in BOOKS if b["id"] == args["id"]), None)

    async def node(parent, args, context, info):
        if args["id"].startswith("a"):
            return {**AUTHORS[args["id"][1:]], "_typename": "Author"}
        return {**BOOKS[int(args["id"]) - 1], "_typename": "Book"}

    async def items(parent, args, context, info):
        return [{**AUTHORS["1"], "_typename": "Author"}, None, {**BOOKS[0], "_typename": "Book"}]

    async def bad_type(parent, args, context, info):
        return {"id": "x", "_typename": "Kind"}

    async def strict(parent, args, context, info):
        return [BOOKS[0], None, BOOKS[1], None]

    async def int_items(parent, args, context, info):
        return [1, None, 3]

    async def bad_enum(parent, args, context, info):
        return "EPIC"

    async def bad_scalar(parent, args, context, info):
        return "not a number"

    async def not_list(parent, args, context, info):
        return 5

    async def required(parent, args, context, info):
        return None

    async def masked(parent, args, context, info):
        raise RuntimeError("secret")

    async def refused(parent, args, context, info):
        raise GraphQLError("you may not", "FORBIDDEN")

    async def probe(parent, args, context, info):
        return {
            "value": {
                "args": args,
                "field_name": info.field_name,
                "path": info.path.as_list(),
                "return_type": str(info.return_type),
                "parent_type": info.parent_type.name,
                "schema": type(info.schema).__name__,
                "fragments": sorted(info.fragments),
                "operation": info.operation.name.value if info.operation.name else None,
                "variables": info.variable_values,
                "field_nodes": [n.name.value for n in info.field_nodes],
                "is_introspection": info.is_introspection,
                "context": type(context).__name__,
                "root": info.root_value,
            }
        }

    async def slow(parent, args, context, info):
        await asyncio.sleep(args["ms"] / 1000)
        log.append(args["ms"])
        if args["fail"]:
            raise GraphQLError(f"failed after {args['ms']}", "SLOW")
        return None if args.get("empty") else args["ms"]

    async def things(parent, args, context, info):
        return [Thing(), {"plain": "dict", "computed": "key", "items": 1, "keys": "k"}, None]

    async def mutate(parent, args, context, info):
        seen = json.loads(json.dumps(args))
        args["arg"] = -1  # a resolver may change its arguments: the next call must not see it
        if args.get("list") is not None:
            args["list"].append(-1)
        return seen

    async def shout(parent, args, context, info):
        return "quiet"

    async def add(parent, args, context, info):
        log.append(args["n"])
        return list(log)

    async def ticks(parent, args, context, info):
        for i in range(args["n"]):
            yield {"lib_ticks": {**BOOKS[i], "title": None} if i == 1 else BOOKS[i]}

    return make_plugin(
        "library",
        plugboard_schema=lambda: SDL,
        plugboard_scalars=lambda: {"Money": Money},
        plugboard_directives=lambda: {"shout": Shout},
        plugboard_subscriptions=lambda: {"Subscription.lib_ticks": ticks},
        plugboard_resolvers=lambda: {
            "Query.lib_books": books,
            "Book.author": author,
            "Author.books": author_books,
            "Query.lib_book": book,
            "Query.lib_node": node,
            "Query.lib_items": items,
            "Query.lib_bad_type": bad_type,
            "Query.lib_strict": strict,
            "Query.lib_loose": strict,
            "Query.lib_int_items": int_items,
            "Query.lib_bad_enum": bad_enum,
            "Query.lib_bad_scalar": bad_scalar,
            "Query.lib_not_list": not_list,
            "Query.lib_required": required,
            "Query.lib_masked": masked,
            "Query.lib_refused": refused,
            "Query.lib_probe": probe,
            "Query.lib_slow": slow,
            "Query.lib_slow_nullable": slow,
            "Query.lib_things": things,
            "Query.lib_shout": shout,
            "Query.lib_mutate": mutate,
            "Mutation.lib_add": add,
        },
    )


QUERIES = {
    "books": "{ lib_books(first: 5) { id title author { id name } rating tags kind price items } }",
    "fragments": """
        query Deep($id: ID!, $first: Int) {
          lib_books(first: $first) { ...B }
          one: lib_node(id: $id) { id ... on Book { ...B } ... on Author { name books { id title } } }
          two: lib_node(id: "a2") { __typename id ...A }
          lib_items { __typename ... on Node { id } ...A ...B }
        }
        fragment A on Author { name books { ...B } }
        fragment B on Book { id title kind price author { ...A2 } }
        fragment A2 on Author { id name __typename }
    """,
    "null_propagation": "{ lib_books(first: 4, broken: true) { id title } lib_book(id: \"1\") { id } }",
    "strict_list": "{ lib_strict { id } lib_book(id: \"2\") { title } }",
    "loose_list": "{ lib_loose { id title } }",
    "int_items": "{ lib_int_items }",
    "bad_enum": "{ lib_bad_enum lib_book(id: \"1\") { kind } }",
    "bad_scalar": "{ lib_bad_scalar }",
    "not_list": "{ lib_not_list }",
    "required": "{ lib_required lib_book(id: \"1\") { id } }",
    "masked": "{ lib_masked lib_refused lib_book(id: \"3\") { title } }",
    "bad_type": "{ lib_bad_type { __typename } }",
    "probe": """query P($a: Int, $l: [Int]) {
        lib_probe(arg: $a, input: {b: ["x"]}, list: $l) { value again }
        aliased: lib_probe { value }
        lib_books(first: 1) { id }
    }""",
    "things": "{ lib_things { plain computed broken items } }",
    "typename": "{ __typename lib_book(id: \"1\") { __typename } lib_items { __typename } }",
    "skip_include": """query S($yes: Boolean!, $no: Boolean!) {
        a: lib_book(id: "1") @include(if: $yes) { id title @skip(if: $yes) }
        b: lib_book(id: "2") @skip(if: $yes) { id }
        lib_book(id: "3") { ... on Book @include(if: $no) { title } ...F @include(if: $yes) }
    }
    fragment F on Book { kind title }""",
    "merged": "{ lib_book(id: \"1\") { id author { id } } lib_book(id: \"1\") { title author { name } } }",
    "variables_default": "query ($first: Int = 2) { lib_books(first: $first) { id } }",
}
VARIABLES = {
    "fragments": {"id": "3", "first": 2},
    "probe": {"a": 7, "l": [1, None]},
    "skip_include": {"yes": True, "no": False},
}


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_same_answer_as_tartiflette(plugboard_client, name):
    planned, tartiflette = await both(plugboard_client, lambda: [library_plugin()], QUERIES[name], VARIABLES.get(name))
    assert planned == tartiflette
    assert planned[0] == 200


async def test_skip_include_outcomes(plugboard_client):
    for yes in (True, False):
        for no in (True, False):
            variables = {"yes": yes, "no": no}
            planned, tartiflette = await both(plugboard_client, lambda: [library_plugin()], QUERIES["skip_include"], variables)
            assert planned == tartiflette


async def test_these_documents_are_planned(plugboard_client):
    client = await plugboard_client({"graphql": {"executor": "planned"}}, plugins=[library_plugin()])
    for name, query in QUERIES.items():
        assert planned_was_used(client.app, query), name


@pytest.mark.parametrize("query", ["{ lib_mutate(arg: 3) }", "{ lib_mutate(arg: 3, list: [1, 2]) }"])
async def test_literal_arguments_are_fresh_on_every_request(plugboard_client, query):
    # Arguments without variables are coerced once per document and kept;
    # a resolver changing its own must not change the next request's.
    client = await plugboard_client({"graphql": {"executor": "planned"}}, plugins=[library_plugin()])
    client.app[keys.ENGINE].compare_executors = False
    answers = []
    for _ in range(3):
        resp = await client.post("/graphql", json={"query": query})
        answers.append((await resp.json())["data"]["lib_mutate"])
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["arg"] == 3
    assert planned_was_used(client.app, query)


async def test_request_errors(plugboard_client):
    query = "query ($id: ID!) { lib_book(id: $id) { id } }"
    for variables in ({}, {"id": None}, {"id": {"x": 1}}):
        planned, tartiflette = await both(plugboard_client, lambda: [library_plugin()], query, variables)
        assert planned == tartiflette


SLOW = """{
  a: lib_slow(ms: 30)
  b: lib_slow_nullable(ms: 1, fail: true)
  c: lib_slow_nullable(ms: 20, fail: true)
  d: lib_slow_nullable(ms: 5)
  lib_books(first: 3) { id title author { name books { id } } }
}"""
SLOW_FAILING = """{
  lib_loose { id }
  x: lib_slow(ms: 25, fail: true)
  y: lib_slow(ms: 2, fail: true)
  z: lib_slow(ms: 10, empty: true)
}"""


@pytest.mark.parametrize("lists", [False, True])
@pytest.mark.parametrize("parents", [False, True])
@pytest.mark.parametrize("query", [SLOW, SLOW_FAILING, QUERIES["fragments"], QUERIES["strict_list"]])
async def test_concurrency_settings(plugboard_client, lists, parents, query):
    settings = {"graphql": {"coerce_list_concurrently": lists, "coerce_parent_concurrently": parents}}
    variables = VARIABLES["fragments"] if query is QUERIES["fragments"] else None
    logs = []

    def plugins():
        logs.append([])
        return [library_plugin(logs[-1])]

    planned, tartiflette = await both(plugboard_client, plugins, query, variables, settings)
    assert planned == tartiflette
    assert logs[0] == logs[1]  # the same resolvers ran, finishing in the same order


async def test_mutations_run_serially(plugboard_client):
    query = "mutation { a: lib_add(n: 1) b: lib_add(n: 2) c: lib_add(n: 3) }"
    planned, tartiflette = await both(plugboard_client, lambda: [library_plugin()], query)
    assert planned == tartiflette
    assert json.loads(planned[1])["data"] == {"a": [1], "b": [1, 2], "c": [1, 2, 3]}


async def test_subscription_events_go_through_the_plan(plugboard_client):
    query = "subscription ($n: Int!) { lib_ticks(n: $n) { id title author { name } } }"
    events = {}
    for executor in ("planned", "tartiflette"):
        client = await plugboard_client({"graphql": {"executor": executor}}, plugins=[library_plugin()])
        client.app[keys.ENGINE].compare_executors = False
        stream = await subscribe(client.app, query, {"n": 3})
        events[executor] = [json.dumps(e) async for e in stream]
        if executor == "planned":
            assert planned_was_used(client.app, query)
    assert events["planned"] == events["tartiflette"]
    assert len(events["planned"]) == 3 and "errors" in events["planned"][1]


async def test_directives_with_hooks_fall_back_logged_once(plugboard_client, caplog):
    caplog.set_level(logging.DEBUG, logger="plugboard.graphql")
    query = "{ lib_shout lib_book(id: \"1\") { id } }"
    client = await plugboard_client({"graphql": {"executor": "planned"}}, plugins=[library_plugin()])
    for _ in range(3):
        assert await client.gql_data(query) == {"lib_shout": "QUIET", "lib_book": {"id": "1"}}
    assert not planned_was_used(client.app, query)
    notes = [r for r in caplog.records if "executing with Tartiflette" in r.getMessage()]
    assert len(notes) == 1 and "on_field_execution" in notes[0].getMessage()
    assert notes[0].levelno == logging.DEBUG


@pytest.mark.parametrize("query", [
    "{ __schema { queryType { name } } }",
    "{ __type(name: \"Book\") { name fields { name } } }",
    "query Q { lib_book(id: \"1\") @deprecated { id } }",
])
async def test_unplannable_documents_still_answer(plugboard_client, query):
    planned, tartiflette = await both(plugboard_client, lambda: [library_plugin()], query)
    assert planned == tartiflette


def test_compare_results_names_the_difference():
    compare_results({"data": {"a": 1}}, {"data": {"a": 1}}, query="{ a }", variables=None)
    with pytest.raises(ExecutorMismatch, match=r"planned executor differs[\s\S]*\{ a \}"):
        compare_results({"data": {"a": 1}}, {"data": {"a": 2}}, query="{ a }", variables=None)
    with pytest.raises(ExecutorMismatch):  # key order is part of the answer
        compare_results({"data": {"a": 1, "b": 2}}, {"data": {"b": 2, "a": 1}}, query="{ a b }", variables=None)


async def test_the_kit_checks_both_executors(plugboard_client, monkeypatch):
    # The default mode of the test kit: planned answers, Tartiflette checks.
    monkeypatch.delenv("PLUGBOARD_TEST_EXECUTOR", raising=False)
    client = await plugboard_client(plugins=[library_plugin()])
    engine = client.app[keys.ENGINE]
    assert engine.compare_executors and engine.options.executor == "planned"
    monkeypatch.setenv("PLUGBOARD_TEST_EXECUTOR", "tartiflette")
    client = await plugboard_client(plugins=[library_plugin()])
    assert client.app[keys.ENGINE].options.executor == "tartiflette"
    assert not client.app[keys.ENGINE].compare_executors


async def test_the_setting_is_validated(plugboard_app):
    from plugboard.errors import ConfigError

    with pytest.raises(ConfigError, match="graphql.executor"):
        plugboard_app({"graphql": {"executor": "fast"}})
