"""``operation.document``: the Tartiflette-free view operation steps walk.

Each test builds an app with a step that records what it sees, sends real
requests (HTTP, WebSocket, SSE) and checks the recorded view.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from core_testkit import make_plugin
from plugboard.graphql.document import Counts, Directive, DocumentView, TypeRef, normalize, tokenize

SDL = """
enum Shelf { FICTION SCIENCE }
interface Item { id: ID! title: String! }
type Book implements Item { id: ID! title: String! tags: [String!]! shelf: Shelf author: Person }
type Film implements Item { id: ID! title: String! minutes: Int }
type Person { name: String! books(first: Int = 10, shelf: Shelf): [Book!]! }
union Hit = Book | Person
input Search { text: String, shelves: [Shelf!], limit: Int }
extend type Query {
  items(first: Int = 20, search: Search): [Item!]!
  book(id: ID!): Book
  hits(text: String!): [Hit]
  matrix: [[Int]]
}
extend type Subscription { ticks(n: Int!): Int! }
"""


class Recorder:
    """The operations a step saw, and whether it looked at their documents."""

    def __init__(self, look: bool = True) -> None:
        self.look = look
        self.ops: list = []
        self.views: list[DocumentView] = []

    def plugin(self):
        async def step(operation, call_next):
            self.ops.append(operation)
            if self.look:
                self.views.append(operation.document)
            return await call_next(operation)

        async def nothing(parent, args, context, info):
            return None

        async def empty(parent, args, context, info):
            return []

        async def ticks(parent, args, context, info):
            for i in range(args["n"]):
                yield {"ticks": i}

        return make_plugin(
            "recorder",
            plugboard_schema=lambda: SDL,
            plugboard_resolvers=lambda: {"Query.items": empty, "Query.book": nothing, "Query.hits": nothing, "Query.matrix": nothing},
            plugboard_subscriptions=lambda: {"Subscription.ticks": ticks},
            plugboard_operation_steps=lambda: [step],
        )


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
async def client(make_app, aiohttp_client, recorder):
    return await aiohttp_client(make_app(plugins=[recorder.plugin()]))


async def post(client, query, variables=None, operation_name=None):
    resp = await client.post("/graphql", json={"query": query, "variables": variables, "operationName": operation_name})
    body = await resp.json()
    assert resp.status == 200 and "errors" not in body, body
    return body


def by_path(view: DocumentView) -> dict:
    return {".".join(path): (sel, depth) for sel, depth, path in view.walk()}


QUERY = """
query Shelf($search: Search, $first: Int = 3, $withAuthor: Boolean!) {
  list: items(first: $first, search: $search) {
    __typename
    id
    ... on Book { tags shelf author @include(if: $withAuthor) { name books(shelf: FICTION) { title } } }
    ...filmParts
  }
  book(id: "b1") { ...bookParts }
}
fragment filmParts on Film { minutes }
fragment bookParts on Book { title t2: title @skip(if: false) }
"""


async def test_operation_type_name_root_and_variables(client, recorder):
    await post(client, QUERY, {"search": {"text": "dune"}, "withAuthor": True})
    view = recorder.views[-1]
    assert view.operation_type == "query"
    assert view.operation_name == "Shelf"
    assert view.root_type == "Query"
    # The operation's variable defaults are applied.
    assert dict(view.variables) == {"search": {"text": "dune"}, "first": 3, "withAuthor": True}


async def test_aliases_arguments_and_variables_applied(client, recorder):
    await post(client, QUERY, {"search": {"text": "dune", "shelves": ["SCIENCE"]}, "first": 7, "withAuthor": True})
    paths = by_path(recorder.views[-1])
    items, _ = paths["list"]
    assert (items.name, items.alias, items.response_key) == ("items", "list", "list")
    assert dict(items.arguments) == {"first": 7, "search": {"text": "dune", "shelves": ["SCIENCE"]}}
    assert items.coordinate == "Query.items"
    # A literal enum is its name; a left-out argument takes the schema default.
    books, _ = paths["list.author.books"]
    assert dict(books.arguments) == {"shelf": "FICTION", "first": 10}
    assert dict(paths["book"][0].arguments) == {"id": "b1"}
    assert paths["book.t2"][0].alias == "t2"


async def test_unset_variable_leaves_argument_to_schema_default(client, recorder):
    await post(client, "query ($n: Int, $s: Search) { items(first: $n, search: $s) { id } }", {})
    items = recorder.views[-1].selections[0]
    assert dict(items.arguments) == {"first": 20}
    await post(client, 'query ($t: String) { items(search: {text: $t, limit: 2}) { id } }', {})
    assert dict(recorder.views[-1].selections[0].arguments) == {"first": 20, "search": {"limit": 2}}


async def test_fragments_and_inline_fragments_are_expanded_with_type_conditions(client, recorder):
    await post(client, QUERY, {"withAuthor": True})
    view = recorder.views[-1]
    assert [p for p in by_path(view)] == [
        "list",
        "list.__typename",
        "list.id",
        "list.tags",
        "list.shelf",
        "list.author",
        "list.author.name",
        "list.author.books",
        "list.author.books.title",
        "list.minutes",
        "book",
        "book.title",
        "book.t2",
    ]
    paths = by_path(view)
    assert paths["list.id"][0].type_condition is None
    assert paths["list.id"][0].parent_type == "Item"
    assert (paths["list.tags"][0].type_condition, paths["list.tags"][0].parent_type) == ("Book", "Book")
    assert paths["list.minutes"][0].type_condition == "Film"
    assert paths["book.title"][0].type_condition == "Book"
    # Below a field from a fragment, selections are on the field's own type again.
    assert paths["list.author.name"][0].type_condition is None
    # A selection walks its own subtree, itself at depth 1.
    author = paths["list.author"][0]
    assert [(".".join(p), d) for _s, d, p in author.walk()] == [
        ("author", 1),
        ("author.name", 2),
        ("author.books", 2),
        ("author.books.title", 3),
    ]


async def test_skip_and_include_leave_selections_out(client, recorder):
    await post(client, QUERY, {"withAuthor": False})
    assert "list.author" not in by_path(recorder.views[-1])
    await post(client, "{ book(id: 1) { title @skip(if: true) id ... @include(if: false) { tags } } }")
    assert list(by_path(recorder.views[-1])) == ["book", "book.id"]


async def test_directives_are_recorded_with_arguments(client, recorder):
    await post(client, QUERY, {"withAuthor": True})
    paths = by_path(recorder.views[-1])
    assert paths["list.author"][0].directives == (Directive("include", {"if": True}),)
    assert paths["book.t2"][0].directives == (Directive("skip", {"if": False}),)
    assert paths["book.title"][0].directives == ()


async def test_field_types_list_or_not(client, recorder):
    await post(client, "{ items { id title } book(id: 1) { tags shelf author { name } } hits(text: \"x\") { __typename } matrix }")
    paths = by_path(recorder.views[-1])
    assert paths["items"][0].type == TypeRef("Item", "interface", is_list=True, non_null=True, sdl="[Item!]!")
    assert paths["items"][0].type.is_abstract
    assert paths["items.id"][0].type == TypeRef("ID", "scalar", is_list=False, non_null=True, sdl="ID!")
    assert paths["book"][0].type == TypeRef("Book", "object", is_list=False, non_null=False, sdl="Book")
    assert paths["book.tags"][0].type == TypeRef("String", "scalar", is_list=True, non_null=True, sdl="[String!]!")
    assert paths["book.shelf"][0].type.kind == "enum" and paths["book.shelf"][0].type.is_leaf
    assert paths["hits"][0].type == TypeRef("Hit", "union", is_list=True, non_null=False, sdl="[Hit]")
    assert paths["hits.__typename"][0].type == TypeRef("String", "scalar", non_null=True, sdl="String!")
    assert paths["matrix"][0].type == TypeRef("Int", "scalar", is_list=True, non_null=False, sdl="[[Int]]")
    assert str(paths["matrix"][0].type) == "[[Int]]"


async def test_depth_and_counts(client, recorder):
    await post(client, QUERY, {"withAuthor": True})
    view = recorder.views[-1]
    assert view.depth == 4  # list.author.books.title
    assert max(depth for _sel, depth, _path in view.walk()) == 4
    assert view.counts == Counts(
        fields=13,
        aliases=2,  # list, t2
        directives=2,  # @include on author, @skip on t2
        fragments=3,  # ... on Book, ...filmParts, ...bookParts
        tokens=len(tokenize(QUERY)),
    )
    await post(client, "{ plugboardVersion }")
    assert recorder.views[-1].depth == 1
    assert recorder.views[-1].counts == Counts(fields=1, tokens=3)


async def test_a_fragment_spread_twice_counts_twice(client, recorder):
    await post(client, "{ a: book(id: 1) { ...B } b: book(id: 2) { ...B } } fragment B on Book { id title }")
    view = recorder.views[-1]
    assert list(by_path(view)) == ["a", "a.id", "a.title", "b", "b.id", "b.title"]
    assert (view.counts.fields, view.counts.fragments, view.depth) == (6, 2, 2)


async def test_nested_fragments_cost_no_more_than_the_document(make_app, aiohttp_client, recorder):
    # Each level spreads the next twice: 2**18 leaves once expanded. Counts
    # and depth come from the shared fragment bodies, not from a walk. The
    # structural limits (on by default) refuse such a document; the view
    # must cope with it when a deployer turns them off.
    off = {"depth": 0, "aliases": 0, "fields": 0}
    client = await aiohttp_client(make_app({"graphql": {"limits": off}}, plugins=[recorder.plugin()]))
    levels = 18
    fragments = [f"fragment F{i} on Person {{ books {{ author {{ ...F{i + 1} }} }} more: books {{ author {{ ...F{i + 1} }} }} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on Person {{ name }}")
    started = time.monotonic()
    await post(client, "{ book(id: 1) { author { ...F0 } } } " + " ".join(fragments))
    view = recorder.views[-1]
    assert time.monotonic() - started < 5
    assert view.depth == 2 + 2 * levels + 1
    assert view.counts.fields == 2 + sum(4 * 2**i for i in range(levels)) + 2**levels
    assert view.counts.aliases == sum(2**i for i in range(levels))


async def test_view_is_not_built_when_no_step_looks(make_app, aiohttp_client):
    recorder = Recorder(look=False)
    client = await aiohttp_client(make_app(plugins=[recorder.plugin()]))
    await post(client, "query ($n: Int) { items(first: $n) { id } }", {"n": 1})
    op = recorder.ops[-1]
    assert op._view is None
    assert not [k for k in op.parsed._derived if isinstance(k, tuple) and k[0] == "operation"]  # no template either


async def test_structure_is_cached_per_document_and_variables_apply_per_request(client, recorder):
    await post(client, "{ book(id: 1) { title } }")
    await post(client, "{ book(id: 1) { title } }")
    assert recorder.views[-1] is recorder.views[-2]  # no variables: one view for all
    query = "query ($id: ID!) { book(id: $id) { title } }"
    await post(client, query, {"id": "1"})
    await post(client, query, {"id": "2"})
    assert recorder.ops[-1].parsed is recorder.ops[-2].parsed
    assert [dict(v.selections[0].arguments) for v in recorder.views[-2:]] == [{"id": "1"}, {"id": "2"}]


async def test_operation_name_picks_the_operation(client, recorder):
    doc = "query A { book(id: 1) { id } } query B { items { title } } mutation C { __typename }"
    await post(client, doc, operation_name="B")
    assert (recorder.views[-1].operation_name, recorder.views[-1].selections[0].name) == ("B", "items")
    # The recorder's schema has no Mutation type: a step that looks is told so.
    accept = {"Accept": "application/graphql-response+json"}
    resp = await client.post("/graphql", json={"query": doc, "operationName": "C"}, headers=accept)
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["message"] == "the schema has no mutation type"


async def test_the_view_has_no_tartiflette_objects(client, recorder):
    await post(client, QUERY, {"withAuthor": True})
    seen = set()

    def check(value):
        module = type(value).__module__
        assert not module.startswith("tartiflette"), value
        if isinstance(value, (list, tuple)):
            for item in value:
                check(item)
        elif hasattr(value, "__attrs_attrs__") and id(value) not in seen:
            seen.add(id(value))
            for attribute in value.__attrs_attrs__:
                check(getattr(value, attribute.name))
        elif hasattr(value, "items"):
            for k, v in value.items():
                check(k)
                check(v)

    check(recorder.views[-1])


# ---------------------------------------------------------------------------
# Other transports
# ---------------------------------------------------------------------------

REALTIME = {
    "plugins": ["realtime"],
    "realtime": {"features": {"presence": False, "chat": False, "notifications": False}, "channels": {"enabled": False}},
}


async def test_view_over_websocket_subscription(make_app, aiohttp_client, recorder):
    client = await aiohttp_client(make_app(REALTIME, plugins=[recorder.plugin()]))
    ws = await client.ws_connect("/graphql", protocols=("graphql-transport-ws",))
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "connection_ack"
    query = "subscription Ticks($n: Int!) { t: ticks(n: $n) }"
    await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"n": 2}}})
    messages = []
    while not messages or messages[-1]["type"] != "complete":
        messages.append(json.loads((await ws.receive(timeout=5)).data))
    assert [m["payload"] for m in messages if m["type"] == "next"] == [{"data": {"t": 0}}, {"data": {"t": 1}}]
    await ws.close()
    view = recorder.views[-1]
    assert (view.operation_type, view.operation_name, view.root_type) == ("subscription", "Ticks", "Subscription")
    (ticks,) = view.selections
    assert (ticks.alias, dict(ticks.arguments), ticks.type.sdl) == ("t", {"n": 2}, "Int!")
    assert recorder.ops[-1].transport == "ws"


async def test_view_over_sse(make_app, aiohttp_client, recorder):
    client = await aiohttp_client(make_app(REALTIME, plugins=[recorder.plugin()]))
    resp = await client.post(
        "/graphql",
        data=json.dumps({"query": "{ b: book(id: 7) { title } }"}),
        headers={"Accept": "text/event-stream", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    body = await asyncio.wait_for(resp.text(), 5)
    assert "event: complete" in body
    assert recorder.ops[-1].transport == "sse"
    view = recorder.views[-1]
    # Literals as written: the ID scalar has not coerced 7 to "7" yet.
    assert [(s.response_key, dict(s.arguments)) for s in view.selections] == [("b", {"id": 7})]


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------


def test_tokens_of_a_known_document():
    doc = 'query Q($n: Int = 2) { a: book(id: "1") { title } }'
    assert tokenize(doc) == [
        "query", "Q", "(", "$", "n", ":", "Int", "=", "2", ")",
        "{", "a", ":", "book", "(", "id", ":", '"1"', ")", "{", "title", "}", "}",
    ]  # fmt: skip


def test_tokens_ignore_comments_commas_and_whitespace_but_keep_strings_whole():
    doc = '''
    # a comment, with "quotes" and { braces }
    query {
      a(s: "with, comma # and hash", b: """block "quoted" \\""" text
      over lines""", n: -1.5e3, l: [1, 2,,3]) ,,, { ...F }
    }
    '''
    assert tokenize(doc) == [
        "query", "{", "a", "(", "s", ":", '"with, comma # and hash"', "b", ":",
        '"""block "quoted" \\""" text\n      over lines"""', "n", ":", "-1.5e3",
        "l", ":", "[", "1", "2", "3", "]", ")", "{", "...", "F", "}", "}",
    ]  # fmt: skip
    assert normalize("{a,b}  # x") == normalize("{ a b }") == "{ a b }"


@pytest.mark.parametrize(
    "doc",
    [
        "{ a }",
        'query Q($v: [Int!]! = [1, 2]) @dir(x: "\\u00e9\\"") { f(a: $v, b: {c: -0.5, d: ENUM, e: null, f: true}) }',
        'mutation { m(x: """\n  multi "" line\n""") { ... on T { y } ... @include(if: true) { z } } }',
        "subscription S { s } fragment F on T { a: b, c(d: 1e10) } # trailing comment",
    ],
)
def test_token_count_matches_graphql_core(doc):
    lexer_module = pytest.importorskip("graphql.language.lexer")
    from graphql.language import Source, TokenKind

    lexer = lexer_module.Lexer(Source(doc))
    count = 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    assert len(tokenize(doc)) == count
