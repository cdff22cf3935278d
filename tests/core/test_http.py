"""GraphQL over HTTP on a real server on loopback: the happy paths and every bad input."""

from __future__ import annotations

import json
import logging

import pytest

from core_testkit import echo_plugin

from plugboard import keys

GQL = "application/graphql-response+json"


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app(plugins=[echo_plugin()]))


async def post(client, body, *, accept=GQL, raw=None, headers=None):
    hdrs = {"Accept": accept, "Content-Type": "application/json", **(headers or {})}
    data = raw if raw is not None else json.dumps(body)
    return await client.post("/graphql", data=data, headers=hdrs)


async def test_query_post_json(client):
    resp = await post(client, {"query": '{ hello(name: "Ada") plugboardVersion }'})
    assert resp.status == 200
    assert resp.content_type == GQL
    assert await resp.json(content_type=None) == {"data": {"hello": "hello Ada", "plugboardVersion": "0.1.0"}}
    assert resp.headers["X-Request-ID"]


async def test_application_json_when_not_accepting_graphql_response(client):
    resp = await post(client, {"query": "{ hello }"}, accept="application/json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    resp = await post(client, {"query": "{ hello }"}, accept="")
    assert resp.content_type == "application/json"


async def test_variables_and_operation_name(client):
    doc = "query A { hello } query B($n: String) { hello(name: $n) }"
    resp = await post(client, {"query": doc, "operationName": "B", "variables": {"n": "Bo"}})
    assert (await resp.json(content_type=None))["data"] == {"hello": "hello Bo"}


async def test_mutation_post(client):
    resp = await post(client, {"query": "mutation { add(a: 2, b: 3) }"})
    assert (await resp.json(content_type=None)) == {"data": {"add": 5}}


async def test_get_query_needs_preflight_header(client):
    resp = await client.get("/graphql", params={"query": "{ hello }"}, headers={"Accept": GQL})
    assert resp.status == 400
    assert "Cross-Site Request Forgery" in (await resp.json(content_type=None))["errors"][0]["message"]
    resp = await client.get(
        "/graphql",
        params={"query": "query($n: String) { hello(name: $n) }", "variables": '{"n": "G"}'},
        headers={"Accept": GQL, "apollo-require-preflight": "true"},
    )
    assert resp.status == 200
    assert (await resp.json(content_type=None)) == {"data": {"hello": "hello G"}}


async def test_mutation_over_get_is_405(client):
    resp = await client.get(
        "/graphql", params={"query": "mutation { add(a: 1, b: 1) }"}, headers={"Accept": GQL, "apollo-require-preflight": "1"}
    )
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert "mutation" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_get_bad_variables_json(client):
    resp = await client.get(
        "/graphql", params={"query": "{ hello }", "variables": "{nope"}, headers={"Accept": GQL, "apollo-require-preflight": "1"}
    )
    assert resp.status == 400
    assert "'variables' is not valid JSON" in (await resp.json(content_type=None))["errors"][0]["message"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ('"a string"', "must be a JSON object"),
        ("{}", "'query' is missing"),
        ('{"query": 42}', "'query' must be a string"),
        ('{"query": "{ hello }", "variables": [1]}', "'variables' must be an object"),
        ('{"query": "{ hello }", "operationName": 3}', "'operationName' must be a string"),
        ('{"query": "{ hello }", "extensions": "x"}', "'extensions' must be an object"),
    ],
)
async def test_malformed_bodies_are_400(client, raw, message):
    for accept in (GQL, "application/json"):
        resp = await post(client, None, raw=raw, accept=accept)
        assert resp.status == 400, raw
        body = await resp.json(content_type=None)
        assert message in body["errors"][0]["message"]
        assert "data" not in body


async def test_batch_is_off_by_default(client):
    resp = await post(client, None, raw='[{"query": "{ hello }"}]')
    assert resp.status == 400
    assert "batched requests are disabled" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_batching_when_enabled(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"graphql": {"batching": True, "max_batch_size": 2}}, plugins=[echo_plugin()]))
    resp = await post(client, [{"query": "{ hello }"}, {"query": "mutation { add(a: 1, b: 2) }"}])
    assert resp.status == 200
    assert await resp.json(content_type=None) == [{"data": {"hello": "hello world"}}, {"data": {"add": 3}}]
    resp = await post(client, [{"query": "{ hello }"}] * 3)
    assert resp.status == 413


async def test_unknown_operation_name(client):
    resp = await post(client, {"query": "query A { hello }", "operationName": "Z"})
    assert resp.status == 400
    assert "unknown operation named 'Z'" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_several_operations_without_name(client):
    resp = await post(client, {"query": "query A { hello } query B { hello }"})
    assert resp.status == 400
    assert "operationName is required" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_document_that_does_not_parse(client):
    resp = await post(client, {"query": "{ hello "})
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert "data" not in body and "syntax error" in body["errors"][0]["message"]
    # application/json keeps 200 for document errors (graphql-http legacy rule)
    resp = await post(client, {"query": "{ hello "}, accept="application/json")
    assert resp.status == 200
    assert "errors" in await resp.json(content_type=None)


async def test_validation_error(client):
    resp = await post(client, {"query": "{ nope }"})
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert "nope" in body["errors"][0]["message"]


async def test_subscription_over_plain_http_is_rejected(make_app, aiohttp_client):
    async def ticks(parent, args, context, info):
        yield 1

    from core_testkit import make_plugin

    plugin = make_plugin(
        "ticks",
        plugboard_schema=lambda: "extend type Subscription { tick: Int }",
        plugboard_subscriptions=lambda: {"Subscription.tick": ticks},
    )
    client = await aiohttp_client(make_app(plugins=[plugin]))
    resp = await post(client, {"query": "subscription { tick }"})
    assert resp.status == 400
    assert "subscription operations are not allowed" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_body_over_limit_is_413(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"graphql": {"max_body_size": "1KB"}}, plugins=[echo_plugin()]))
    resp = await post(client, {"query": "{ hello }", "variables": {"pad": "x" * 2000}})
    assert resp.status == 413
    assert "larger than 1024 bytes" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_body_over_limit_chunked_is_413(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"graphql": {"max_body_size": "1KB"}}, plugins=[echo_plugin()]))

    async def gen():
        yield b'{"query": "{ hello }", "variables": {"pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    resp = await client.post("/graphql", data=gen(), headers={"Content-Type": "application/json", "Accept": GQL})
    assert resp.status == 413


async def test_wrong_content_type_is_415(client):
    resp = await client.post("/graphql", data="{ hello }", headers={"Content-Type": "text/plain", "Accept": GQL})
    assert resp.status == 415
    assert "unsupported content type 'text/plain'" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_unacceptable_accept_is_406(client):
    resp = await post(client, {"query": "{ hello }"}, accept="text/html")
    assert resp.status == 406


async def test_resolver_error_is_masked_and_logged(client, caplog):
    caplog.set_level(logging.ERROR, logger="plugboard.graphql")
    resp = await post(client, {"query": "{ boom hello }"}, headers={"X-Request-ID": "req-123"})
    assert resp.status == 200
    body = await resp.json(content_type=None)
    assert body["data"] == {"boom": None, "hello": "hello world"}
    [error] = body["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-123"}
    assert "secret" not in json.dumps(body)
    [record] = [r for r in caplog.records if "Query.boom" in r.getMessage()]
    assert "plugin 'echo'" in record.getMessage() and "req-123" in record.getMessage()
    assert "secret database password leaked" in str(record.exc_info[1])


async def test_request_id_on_every_response(client):
    """The client's id when sane, else a fresh one; on errors aiohttp answers too (400, 404, 405, 413)."""
    resp = await post(client, None, raw="{not json", headers={"X-Request-ID": "req-7"})
    assert resp.status == 400 and resp.headers["X-Request-ID"] == "req-7"
    resp = await client.get("/no/such/route", headers={"X-Request-ID": "req-8"})
    assert resp.status == 404 and resp.headers["X-Request-ID"] == "req-8"
    resp = await client.put("/graphql", headers={"X-Request-ID": "req-9"})
    assert resp.status == 405 and resp.headers["X-Request-ID"] == "req-9"
    resp = await post(client, None, raw="x" * (client.app[keys.CORE_CONFIG].graphql.max_body_size + 1))
    assert resp.status == 413 and len(resp.headers["X-Request-ID"]) == 32
    resp = await post(client, {"query": "{ hello }"}, headers={"X-Request-ID": "not\tsafe, spaces"})
    assert resp.status == 200 and len(resp.headers["X-Request-ID"]) == 32
    assert resp.headers["X-Request-ID"] != (await post(client, {"query": "{ hello }"})).headers["X-Request-ID"]


async def test_resolver_error_shown_in_debug(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"server": {"debug": True}}, plugins=[echo_plugin()]))
    resp = await post(client, {"query": "{ boom }"})
    body = await resp.json(content_type=None)
    assert body["errors"][0]["message"] == "RuntimeError: secret database password leaked"


async def test_graphql_error_reaches_client(client):
    resp = await post(client, {"query": "{ refuse }"})
    body = await resp.json(content_type=None)
    assert body["errors"][0]["message"] == "you may not"
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}


async def test_context_hook_identity_and_rejection(client):
    resp = await post(client, {"query": "{ whoami }"}, headers={"Authorization": "Bearer alice"})
    assert (await resp.json(content_type=None)) == {"data": {"whoami": "alice"}}
    resp = await post(client, {"query": "{ whoami }"}, headers={"Authorization": "Bearer bad"})
    assert resp.status == 401
    assert (await resp.json(content_type=None))["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_json_scalar_roundtrip(client):
    value = {"a": [1, 2.5, None, True], "b": "x"}
    resp = await post(client, {"query": "query($v: JSON) { echoJson(value: $v) }", "variables": {"v": value}})
    assert (await resp.json(content_type=None)) == {"data": {"echoJson": value}}
    resp = await post(client, {"query": '{ echoJson(value: {a: [1, "x"], b: null}) }'})
    assert (await resp.json(content_type=None)) == {"data": {"echoJson": {"a": [1, "x"], "b": None}}}


@pytest.mark.parametrize(
    "sent, echoed",
    [
        ("2026-12-07T10:00:00Z", "2026-12-07T10:00:00+00:00"),
        ("2026-12-07T10:00:00.250000+02:00", "2026-12-07T10:00:00.250000+02:00"),
        ("2026-12-07T10:00:00", "2026-12-07T10:00:00"),
    ],
)
async def test_datetime_reads_back_what_it_writes(client, sent, echoed):
    # ISO 8601 with fractions and offsets, in variables and literals (Tartiflette's built-in read only the naive form).
    resp = await post(client, {"query": "query($v: DateTime) { echoDateTime(value: $v) }", "variables": {"v": sent}})
    assert (await resp.json(content_type=None)) == {"data": {"echoDateTime": echoed}}
    resp = await post(client, {"query": f'{{ echoDateTime(value: "{sent}") }}'})
    assert (await resp.json(content_type=None)) == {"data": {"echoDateTime": echoed}}
    resp = await post(client, {"query": "query($v: DateTime) { echoDateTime(value: $v) }", "variables": {"v": echoed}})
    assert (await resp.json(content_type=None)) == {"data": {"echoDateTime": echoed}}


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00", 1765101600, ""])
async def test_datetime_refuses_what_is_not_one(client, bad):
    resp = await post(client, {"query": "query($v: DateTime) { echoDateTime(value: $v) }", "variables": {"v": bad}})
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert "data" not in body and "ISO 8601" in body["errors"][0]["message"]
    if isinstance(bad, str):
        resp = await post(client, {"query": f'{{ echoDateTime(value: "{bad}") }}'})
        assert resp.status == 400
        body = await resp.json(content_type=None)
        assert "data" not in body and "DateTime" in body["errors"][0]["message"]


async def test_health_and_ready(client):
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["records"] == "ok"


async def test_ready_reports_failing_check(make_app, aiohttp_client):
    from core_testkit import make_plugin

    async def broken():
        raise ConnectionError("mail server down")

    plugin = make_plugin("probe", plugboard_ready_checks=lambda: {"smtp": broken})
    client = await aiohttp_client(make_app(plugins=[plugin]))
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["probe:smtp"] == "ConnectionError: mail server down"


def test_response_json_encodes_dates_and_every_json_value():
    import datetime

    from plugboard.transports.http import dumps_bytes

    when = datetime.datetime(2026, 12, 5, 14, 0, 1, 250, tzinfo=datetime.timezone.utc)
    assert json.loads(dumps_bytes({"a": [1, "é"], "at": when, "day": when.date()})) == {
        "a": [1, "é"], "at": "2026-12-05T14:00:01.000250+00:00", "day": "2026-12-05"
    }
    assert json.loads(dumps_bytes({"n": 2**70})) == {"n": 2**70}
    assert json.loads(dumps_bytes({"s": "\ud800"})) == {"s": "\ud800"}
    deep: list = []
    for _ in range(400):
        deep = [deep]
    assert dumps_bytes(deep) == b"[" * 401 + b"]" * 401
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        dumps_bytes({"x": object()})
