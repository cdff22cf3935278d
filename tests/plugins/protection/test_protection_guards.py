"""Operation guards: the execution timeout, the concurrency cap per client, hidden "Did you mean" suggestions; bad settings."""

from __future__ import annotations

import asyncio

import pytest

from plugboard import hookimpl
from plugboard.errors import ConfigError

GQL = {"Accept": "application/graphql-response+json"}
ADMIN = {"Authorization": "Bearer admin-secret"}


class Slow:
    """``slow(seconds)`` sleeps (and records cancellations); ``shelf(order)`` takes an enum and an input."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()

    @hookimpl
    def plugboard_schema(self):
        return """
        enum Order { TITLE AUTHOR }
        input Filter { title: String }
        extend type Query {
          slow(seconds: Float!): String
          shelf(order: Order, filter: Filter): String
        }
        extend type Subscription { ticks(n: Int!): Int }
        """

    @hookimpl
    def plugboard_resolvers(self):
        async def slow(parent, args, ctx, info):
            self.started.set()
            try:
                await asyncio.sleep(args["seconds"])
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return "done"

        async def shelf(parent, args, ctx, info):
            return str(args.get("order"))

        return {"Query.slow": slow, "Query.shelf": shelf}

    @hookimpl
    def plugboard_subscriptions(self):
        async def ticks(parent, args, ctx, info):
            for i in range(args["n"]):
                await asyncio.sleep(0.2)
                yield {"ticks": i}

        return {"Subscription.ticks": ticks}


def _settings(protection=None, **more):
    return {"plugins": ["realtime", "protection"], "server": {"admin_token": "admin-secret"}, "protection": protection or {}, **more}


async def test_timeout_cancels_http_and_ws_operations(plugboard_client):
    slow = Slow()
    client = await plugboard_client(_settings({"graphql": {"timeout": "0.3s"}}), plugins=[slow])
    async with client.post("/graphql", json={"query": "{ slow(seconds: 5) }"}, headers=GQL) as resp:
        # Execution had started: a null data and the error, 200 (graphql-over-http's rule).
        assert resp.status == 200
        body = await resp.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "TIMEOUT", "timeout": 0.3}
    assert "longer than 0.3s" in body["errors"][0]["message"]
    assert slow.cancelled == 1
    # Within the limit: answered as usual.
    assert await client.gql_data("{ slow(seconds: 0.01) }") == {"slow": "done"}
    async with await client.ws() as ws:
        [payload] = await ws.execute("{ slow(seconds: 5) }")
        assert payload["errors"][0]["extensions"]["code"] == "TIMEOUT"
        # Subscriptions are not limited: this one outlives the timeout.
        payloads = await ws.execute("subscription { ticks(n: 3) }", op_id="2")
        assert [p["data"]["ticks"] for p in payloads] == [0, 1, 2]
    assert slow.cancelled == 2
    from plugboard.plugins.protection.guards import GUARDS

    assert client.app[GUARDS].timeouts == 2


async def test_concurrency_cap_per_client_across_http_and_ws(plugboard_client):
    slow = Slow()
    client = await plugboard_client(_settings({"concurrency": {"max": 1}}), plugins=[slow])
    async with await client.ws() as ws:
        await ws.subscribe("1", "{ slow(seconds: 0.5) }")
        await asyncio.wait_for(slow.started.wait(), 5)
        # Same client (IP) over HTTP: refused while the WebSocket's query runs.
        async with client.post("/graphql", json={"query": "{ slow(seconds: 0) }"}, headers=GQL) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            body = await resp.json()
        assert body["errors"][0]["extensions"] == {"code": "TOO_MANY_CONCURRENT_OPERATIONS", "maxConcurrent": 1}
        # ... and on the same socket: an error for that operation, the socket stays up.
        await ws.subscribe("2", "{ slow(seconds: 0) }")
        [error] = await ws.until_complete("2")
        assert error["type"] == "error" and error["payload"][0]["extensions"]["code"] == "TOO_MANY_CONCURRENT_OPERATIONS"
        messages = await ws.until_complete("1")
        assert messages[0]["payload"]["data"] == {"slow": "done"}
        # The slot is free again; subscriptions never count.
        await ws.subscribe("3", "subscription { ticks(n: 2) }")
        assert await client.gql_data("{ slow(seconds: 0) }") == {"slow": "done"}
        assert len(await ws.until_complete("3")) == 3
    # Another client (an admin-token bearer is still the same IP; an API key or user would differ).
    from plugboard.plugins.protection.guards import GUARDS

    guards = client.app[GUARDS]
    assert guards.concurrency.running == {} and guards.concurrency.total == 0
    assert guards.concurrency.refusals == 2


async def test_concurrency_counts_per_identity(plugboard_client):
    slow = Slow()
    client = await plugboard_client(_settings({"concurrency": {"max": 1}, "api_keys": True}), plugins=[slow])
    created = await client.gql_data('mutation { createApiKey(input: {name: "k"}) { secret } }', headers=ADMIN)
    secret = created["createApiKey"]["secret"]
    task = asyncio.ensure_future(client.gql("{ slow(seconds: 0.5) }"))
    await asyncio.wait_for(slow.started.wait(), 5)
    # The key is a client of its own, though it comes from the same address.
    assert (await client.gql("{ slow(seconds: 0) }", headers={"X-API-Key": secret}))["data"] == {"slow": "done"}
    await client.gql("{ slow(seconds: 0) }", status=429)
    assert (await task)["data"] == {"slow": "done"}


async def test_suggestions_hidden_when_introspection_is_off(plugboard_client):
    client = await plugboard_client(_settings(graphql={"introspection": False}), plugins=[Slow()])
    query = "query ($o: Order, $f: Filter) { shelf(order: $o, filter: $f) }"
    for variables in ({"o": "TITEL"}, {"f": {"titel": "x"}}):
        body = await client.gql(query, variables, status=None)
        message = body["errors"][0]["message"]
        assert "Did you mean" not in message and message, body
        # Admins may introspect, and so see the suggestion.
        admin = await client.gql(query, variables, headers=ADMIN, status=None)
        assert "Did you mean" in admin["errors"][0]["message"], admin
    async with await client.ws() as ws:
        await ws.subscribe("1", query, {"o": "TITEL"})
        messages = await ws.until_complete("1")
        assert "Did you mean" not in str(messages)


@pytest.mark.parametrize(("introspection", "mode", "shown"), [(True, "auto", True), (True, "hide", False), (False, "show", True)])
async def test_suggestions_modes(plugboard_client, introspection, mode, shown):
    client = await plugboard_client(
        _settings({"graphql": {"suggestions": mode}}, graphql={"introspection": introspection}), plugins=[Slow()]
    )
    body = await client.gql("query ($o: Order) { shelf(order: $o) }", {"o": "TITEL"}, status=None)
    assert ("Did you mean TITLE?" in body["errors"][0]["message"]) is shown, body


def test_strip():
    from plugboard.plugins.protection.suggestions import strip

    assert strip("Value < TITEL > does not exist. Did you mean TITLE?") == "Value < TITEL > does not exist"
    assert strip("Field < a > is not defined; Did you mean b, c, or d?") == "Field < a > is not defined"
    assert strip("no suggestion here") == "no suggestion here"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"graphql": {"timeout": "soon"}}, "protection.graphql.timeout"),
        ({"graphql": {"timeout": "-1s"}}, "protection.graphql.timeout"),
        ({"graphql": {"suggestions": "maybe"}}, "protection.graphql.suggestions"),
        ({"concurrency": {"max": -1}}, "protection.concurrency.max"),
    ],
)
def test_bad_guard_settings_name_the_key(plugboard_app, section, message):
    with pytest.raises(ConfigError, match=message):
        plugboard_app(_settings(section))
