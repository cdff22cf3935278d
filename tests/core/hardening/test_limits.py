"""Finding 1: documents that would stall the event loop are refused before parsing.

Each probe from the review goes to a real server on loopback; the refusal
must be a 400 with the limit's ``extensions.code``, quick, and must not hold
up a concurrent ``{ __typename }`` for more than 100 ms.
"""

from __future__ import annotations

import time

import pytest

from hardening_kit import GRAPHQL_RESPONSE, INTROSPECTION_QUERY, aliases, deep, error_code, many_fragments, post, while_responsive

from plugboard.graphql.limits import LimitsConfig, check_document
from plugboard.graphql.errors import GraphQLError


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app({"plugins": ["books"]}))


@pytest.mark.parametrize(
    "document, codes",
    [
        pytest.param(many_fragments(), {"DOCUMENT_TOO_LARGE"}, id="10k-fragments-508KB"),
        pytest.param(deep(4_000), {"TOO_MANY_TOKENS", "QUERY_TOO_DEEP"}, id="depth-4000"),
        pytest.param(aliases(40_000), {"DOCUMENT_TOO_LARGE"}, id="40k-aliases-949KB"),
    ],
)
async def test_the_reviews_probes_are_refused_without_blocking(client, document, codes):
    (status, body), slowest = await while_responsive(client, lambda: post(client, document))
    assert status == 400, body
    assert error_code(body) in codes, body
    assert "limit" in body["errors"][0]["extensions"]
    assert slowest < 0.1


@pytest.mark.parametrize(
    "limits, document, code",
    [
        ({"size": 0}, many_fragments(3_000), "TOO_MANY_TOKENS"),
        ({}, deep(16), "QUERY_TOO_DEEP"),
        ({}, aliases(31), "TOO_MANY_ALIASES"),
        ({}, "{ books { " + "id " * 1_001 + "} }", "TOO_MANY_FIELDS"),
        ({}, many_fragments(60), "TOO_MANY_FRAGMENTS"),
        ({}, "{ books { " + "id @skip(if: false) " * 51 + "} }", "TOO_MANY_DIRECTIVES"),
        ({"size": 0, "tokens": 0}, many_fragments(10_000), "TOO_MANY_FRAGMENTS"),
        ({"size": 0, "tokens": 0}, deep(4_000), "QUERY_TOO_DEEP"),
        ({"size": 0, "tokens": 0}, aliases(40_000), "TOO_MANY_ALIASES"),
    ],
)
async def test_each_limit_has_its_code(make_app, aiohttp_client, limits, document, code):
    client = await aiohttp_client(make_app({"plugins": ["books"], "graphql": {"limits": limits}}))
    started = time.perf_counter()
    (status, body), slowest = await while_responsive(client, lambda: post(client, document))
    assert (status, error_code(body)) == (400, code), body
    if not limits:
        assert slowest < 0.1
    # Without the size and token limits the lexer pass reads the whole
    # document: still linear, and far from the seconds Tartiflette took.
    assert time.perf_counter() - started < 2


async def test_fragments_spread_in_fragments_are_counted_expanded(client):
    # Each level spreads the next twice: tiny text, 2**18 fields once expanded.
    levels = 18
    fragments = [f"fragment F{i} on Author {{ books {{ author {{ ...F{i + 1} }} }} more: books {{ author {{ ...F{i + 1} }} }} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on Author {{ name }}")
    status, body = await post(client, "{ books { author { ...F0 } } } " + " ".join(fragments))
    assert (status, error_code(body)) == (400, "QUERY_TOO_DEEP"), body
    # The last three levels alone: depth 9, 7 aliases once expanded.
    status, body = await post(client, "{ books { author { ...F0 } } } " + " ".join(fragments[-4:]).replace("F15", "F0"))
    assert status == 200 and "errors" not in body, body


async def test_with_every_limit_off_depth_is_still_a_client_error(make_app, aiohttp_client):
    off = dict.fromkeys(("size", "tokens", "depth", "aliases", "fields", "fragments", "directives"), 0)
    client = await aiohttp_client(make_app({"plugins": ["books"], "graphql": {"limits": off}}))
    # Past Python's recursion limit: Tartiflette's AST building recurses.
    status, body = await post(client, deep(1_500))
    assert (status, error_code(body)) == (400, "QUERY_TOO_DEEP"), body


async def test_get_requests_are_limited_too(client):
    resp = await client.get("/graphql", params={"query": aliases(31)}, headers={"Accept": GRAPHQL_RESPONSE, "graphql-require-preflight": "1"})
    body = await resp.json(content_type=None)
    assert (resp.status, error_code(body)) == (400, "TOO_MANY_ALIASES"), body


async def test_application_json_clients_get_the_error_too(client):
    resp = await client.post("/graphql", json={"query": deep(16)})
    body = await resp.json()
    assert resp.status == 200 and error_code(body) == "QUERY_TOO_DEEP"  # the spec's legacy status


async def test_graphql_js_full_introspection_query_passes(client):
    status, body = await post(client, INTROSPECTION_QUERY, operationName="IntrospectionQuery")
    assert status == 200 and "errors" not in body, body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"
    shape = check_document(INTROSPECTION_QUERY, LimitsConfig())
    assert shape.depth <= LimitsConfig().depth and shape.introspection


async def test_ordinary_queries_pass(client):
    query = """
      query Page($first: Int, $after: ID) {
        books(first: $first, after: $after) { id title publishedYear author { id name books { id title } } }
        authors { id name }
      }
    """
    status, body = await post(client, query, variables={"first": 5})
    assert status == 200 and "errors" not in body, body


def test_the_measure_is_linear_and_does_not_recurse():
    limits = LimitsConfig(size=0, tokens=0, depth=0, aliases=0, fields=0, fragments=0, directives=0)
    timings = []
    for n in (20_000, 80_000):
        started = time.perf_counter()
        shape = check_document(deep(n), limits)
        timings.append(time.perf_counter() - started)
        assert shape.depth == n
    assert timings[1] < timings[0] * 8  # 4x the input: well under quadratic


def test_nested_values_count_as_depth():
    with pytest.raises(GraphQLError) as e:
        check_document("{ books(first: " + "[" * 40 + "1" + "]" * 40 + ") { id } }", LimitsConfig())
    assert e.value.code == "QUERY_TOO_DEEP"


def test_the_c_level_count_agrees_with_the_lexer():
    from hypothesis import given, settings, strategies as st

    from plugboard.graphql.document import tokenize
    from plugboard.graphql.limits import count_tokens

    pieces = st.sampled_from(["{", "}", "a", "_b1", "...", "#c", "\n", " ", ",", '"s"', '"""b"""', '"', "-1.5e3", "@", "$", "\\", "é"])

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(pieces, max_size=40).map("".join) | st.text(max_size=60))
    def check(source):
        assert count_tokens(source) == len(tokenize(source))

    check()


async def test_websocket_and_sse_are_limited_too(make_app, aiohttp_client):
    realtime = {"channels": {"enabled": False}, "features": {"presence": False, "chat": False, "notifications": False}}
    client = await aiohttp_client(make_app({"plugins": ["books", "realtime"], "realtime": realtime}))
    async with client.ws_connect("/graphql", protocols=["graphql-transport-ws"]) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": deep(16)}})
        message = await ws.receive_json(timeout=5)
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "QUERY_TOO_DEEP", message
        await ws.send_json({"id": "2", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        assert (await ws.receive_json(timeout=5))["type"] == "next"  # the connection lives on
    resp = await client.post("/graphql", json={"query": aliases(31)}, headers={"Accept": "text/event-stream"})
    assert "TOO_MANY_ALIASES" in await resp.text()
