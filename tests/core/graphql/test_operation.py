"""What operation steps get besides the document: ``operation_key`` (also the shared-subscription key) and ``response_headers``."""

from __future__ import annotations

import asyncio

import pytest

from core_testkit import echo_plugin, make_plugin
from plugboard import keys
from plugboard.graphql.context import Context
from plugboard.graphql.operation import Operation, operation_key


@pytest.fixture
def keys_seen():
    return []


@pytest.fixture
async def client(make_app, aiohttp_client, keys_seen):
    async def record_key(operation, call_next):
        keys_seen.append(operation_key(operation))
        return await call_next(operation)

    plugin = make_plugin("keys", plugboard_operation_steps=lambda: [record_key])
    return await aiohttp_client(make_app(plugins=[plugin, echo_plugin()]))


async def key_of(client, keys_seen, query, variables=None, operation_name=None, user=None):
    headers = {"Authorization": f"Bearer {user}"} if user else {}
    body = {"query": query, "variables": variables, "operationName": operation_name}
    resp = await client.post("/graphql", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    return keys_seen[-1]


async def test_operation_key_ignores_layout_commas_and_comments(client, keys_seen):
    a = await key_of(client, keys_seen, "{ hello(name: \"x\") }")
    b = await key_of(client, keys_seen, "# cached\n{\n  hello(name: \"x\"),\n}\n")
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0  # a hex digest: fit for a Redis key


async def test_operation_key_differs_by_document_variables_name_and_identity(client, keys_seen):
    query = "query Q($n: String) { hello(name: $n) } query R { hello }"
    base = await key_of(client, keys_seen, query, {"n": "a"}, "Q")
    assert await key_of(client, keys_seen, query, {"n": "a"}, "Q") == base
    assert await key_of(client, keys_seen, query, {"n": "b"}, "Q") != base
    assert await key_of(client, keys_seen, query, None, "R") != base
    assert await key_of(client, keys_seen, query, {"n": "a"}, "Q", user="alice") != base
    assert await key_of(client, keys_seen, query, {"n": "a"}, "Q", user="bob") != keys_seen[-2]
    assert await key_of(client, keys_seen, '{ hello(name: "a") }') != await key_of(client, keys_seen, '{ hello(name: "b") }')


async def test_operation_key_ignores_variable_order(client, keys_seen):
    query = "query ($a: String, $b: String) { hello(name: $a) again: hello(name: $b) }"
    first = await key_of(client, keys_seen, query, {"a": "1", "b": "2"})
    assert await key_of(client, keys_seen, query, {"b": "2", "a": "1"}) == first
    assert await key_of(client, keys_seen, query, {"a": "2", "b": "1"}) != first


async def test_response_headers_from_steps_reach_the_http_response(make_app, aiohttp_client):
    async def rate_limit(operation, call_next):
        operation.response_headers["RateLimit"] = '"default";r=9;t=60'
        operation.response_headers.add("RateLimit-Policy", '"default";q=10;w=60')
        operation.response_headers.add("RateLimit-Policy", '"burst";q=2;w=1')
        return await call_next(operation)

    async def cache(operation, call_next):
        result = await call_next(operation)
        operation.response_headers["Cache-Control"] = "max-age=5"
        return result

    plugins = [make_plugin("limits", plugboard_operation_steps=lambda: [rate_limit]), make_plugin("cache", plugboard_operation_steps=lambda: [cache]), echo_plugin()]
    client = await aiohttp_client(make_app(plugins=plugins))
    resp = await client.post("/graphql", json={"query": "{ hello }"})
    assert resp.status == 200
    assert (await resp.json())["data"] == {"hello": "hello world"}
    assert resp.headers["RateLimit"] == '"default";r=9;t=60'
    assert resp.headers.getall("RateLimit-Policy") == ['"default";q=10;w=60', '"burst";q=2;w=1']
    assert resp.headers["Cache-Control"] == "max-age=5"
    # GET runs the same steps.
    resp = await client.get("/graphql", params={"query": "{ hello }"}, headers={"GraphQL-Require-Preflight": "1"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "max-age=5"


async def test_response_headers_start_empty_and_state_stays_free(make_app, aiohttp_client):
    seen = []

    async def look(operation, call_next):
        seen.append((dict(operation.response_headers), dict(operation.state)))
        return await call_next(operation)

    client = await aiohttp_client(make_app(plugins=[make_plugin("look", plugboard_operation_steps=lambda: [look]), echo_plugin()]))
    await client.post("/graphql", json={"query": "{ hello }"})
    assert seen == [({}, {})]


async def test_subscriptions_differing_only_in_layout_share_one_source(make_app, aiohttp_client):
    started = []

    async def ticks(parent, args, context, info):
        started.append(args)
        yield {"tick": 1}
        await asyncio.Event().wait()

    plugin = make_plugin(
        "feed",
        plugboard_schema=lambda: "extend type Subscription { tick(every: Int): Int }",
        plugboard_subscriptions=lambda: {"Subscription.tick": ticks},
    )
    app = make_app(plugins=[plugin])
    await aiohttp_client(app)  # start-up cooks the engine

    async def subscribe(query, variables=None):
        context = Context(app=app, request=None, request_id="t", transport="test")
        op = Operation(query=query, variables=variables, operation_name=None, extensions=None, context=context, transport="test")
        app[keys.RUNNER].prepare(op, allowed_types=("subscription",))
        return await app[keys.RUNNER].subscribe(op)

    streams = [
        await subscribe("subscription { tick(every: 1) }"),
        await subscribe("subscription {\n  tick(every: 1)  # one a second\n}"),
        await subscribe("subscription { tick(every: 2) }"),
    ]
    for stream in streams:
        assert await asyncio.wait_for(stream.__anext__(), 2) == {"data": {"tick": 1}}
    assert started == [{"every": 1}, {"every": 2}]
    for stream in streams:
        await stream.aclose()


async def test_plain_function_steps_and_done_callbacks(make_app, aiohttp_client, caplog):
    from plugboard.graphql.errors import GraphQLError

    outcomes = []

    def observe(operation, call_next):
        # No coroutine of its own: the outcome arrives through the callback.
        operation.add_done_callback(lambda op, outcome: outcomes.append(outcome))
        operation.add_done_callback(lambda op, outcome: 1 / 0)  # logged, the answer unchanged
        operation.add_done_callback(lambda op, outcome: outcomes.append("after"))
        return call_next(operation)

    def refuse(operation, call_next):
        if "nope" in operation.query:
            raise GraphQLError("refused here", "REFUSED", headers={"Retry-After": "3"})
        return call_next(operation)

    plugins = [make_plugin("observe", plugboard_operation_steps=lambda: [observe, refuse]), echo_plugin()]
    client = await aiohttp_client(make_app(plugins=plugins))
    resp = await client.post("/graphql", json={"query": "{ hello }"})
    assert resp.status == 200 and (await resp.json())["data"] == {"hello": "hello world"}
    assert outcomes[0]["data"] == {"hello": "hello world"} and outcomes[1] == "after"
    assert "done callback" in caplog.text and "ZeroDivisionError" in caplog.text
    # A plain function's refusal is the same client error as an async step's.
    resp = await client.post("/graphql", json={"query": "{ hello } # nope"}, headers={"Accept": "application/graphql-response+json"})
    body = await resp.json()
    assert body["errors"][0]["extensions"]["code"] == "REFUSED"
    assert resp.headers["Retry-After"] == "3"
    assert isinstance(outcomes[2], GraphQLError) and outcomes[3] == "after"
