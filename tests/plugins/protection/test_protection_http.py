"""Request limits over real HTTP/WS/SSE on loopback: 429, Retry-After, IETF headers, health exempt, proxies, skipFailedRequests; depth and cost."""

from __future__ import annotations

import pytest

from plugboard.errors import ConfigError

BOOKS = "{ books(first: 2) { title } }"
#: graphql-http: only this media type gets the 4xx statuses (application/json keeps 200 for request errors).
GQL = {"Accept": "application/graphql-response+json"}


def settings(**protection):
    return {"plugins": ["books", "protection"], "protection": protection}


async def test_limit_then_429_with_headers(plugboard_client):
    client = await plugboard_client(settings(requests={"max": 3, "window_ms": 60000}))
    for remaining in (2, 1, 0):
        async with client.post("/graphql", json={"query": BOOKS}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["RateLimit-Policy"] == '"ip";q=3;w=60'
            assert resp.headers["RateLimit"].startswith(f'"ip";r={remaining};t=')
    async with client.post("/graphql", json={"query": BOOKS}) as resp:
        assert resp.status == 429
        body = await resp.json()
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert resp.headers["RateLimit"].startswith('"ip";r=0;t=')
    # Health endpoints are never limited.
    for path in ("/healthz", "/readyz"):
        async with client.get(path) as resp:
            assert resp.status == 200
            assert "RateLimit" not in resp.headers


async def test_http_errors_carry_the_headers_and_count(plugboard_client):
    # aiohttp's own error responses (an unknown path, a method the route does
    # not take) are counted and carry the headers like any other response.
    client = await plugboard_client(settings(requests={"max": 3, "window_ms": 60000}))
    async with client.get("/no-such-page") as resp:
        assert resp.status == 404
        assert resp.headers["RateLimit-Policy"] == '"ip";q=3;w=60'
        assert resp.headers["RateLimit"].startswith('"ip";r=2;t=')
    async with client.delete("/graphql") as resp:
        assert resp.status == 405
        assert resp.headers["RateLimit"].startswith('"ip";r=1;t=')
    async with client.post("/graphql", json={"query": BOOKS}) as resp:
        assert resp.status == 200
    async with client.get("/no-such-page") as resp:
        assert resp.status == 429
        assert resp.headers["RateLimit"].startswith('"ip";r=0;t=')


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(plugboard_client):
    client = await plugboard_client(settings(requests={"max": 1, "window_ms": 60000}))
    async with client.post("/graphql", json={"query": BOOKS}, headers={"X-Forwarded-For": "198.51.100.1"}) as resp:
        assert resp.status == 200
    # A new forged address does not buy a fresh window.
    async with client.post("/graphql", json={"query": BOOKS}, headers={"X-Forwarded-For": "198.51.100.2"}) as resp:
        assert resp.status == 429


async def test_trusted_proxy_forwarded_for_counts_the_client(plugboard_client):
    client = await plugboard_client(settings(requests={"max": 1, "window_ms": 60000}, trusted_proxies=["127.0.0.0/8"]))
    for ip in ("198.51.100.1", "198.51.100.2"):
        async with client.post("/graphql", json={"query": BOOKS}, headers={"X-Forwarded-For": f"203.0.113.9, {ip}"}) as resp:
            assert resp.status == 200
    async with client.post("/graphql", json={"query": BOOKS}, headers={"X-Forwarded-For": "198.51.100.1"}) as resp:
        assert resp.status == 429


async def test_skip_failed_requests(plugboard_client):
    client = await plugboard_client(settings(requests={"max": 2, "window_ms": 60000, "skip_failed_requests": True}))
    for _ in range(4):
        async with client.post("/graphql", json={"query": "{ nope }"}, headers={"Accept": "application/graphql-response+json"}) as resp:
            assert resp.status == 400
    for _ in range(2):
        async with client.post("/graphql", json={"query": BOOKS}) as resp:
            assert resp.status == 200
    async with client.post("/graphql", json={"query": BOOKS}) as resp:
        assert resp.status == 429


async def test_depth_and_cost_limits(plugboard_client):
    client = await plugboard_client(settings(graphql={"max_depth": 3, "max_complexity": 50}))
    deep = "{ books(first: 1) { author { books { author { name } } } } }"
    result = await client.gql(deep, headers=GQL, status=400)
    err = result["errors"][0]
    assert err["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": 5, "maxDepth": 3}
    # books(first: 100) x (1 + author 1) = 200 > 50; aliases count twice.
    result = await client.gql("{ a: books(first: 100) { title author { name } } }", headers=GQL, status=400)
    assert result["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 200, "maxComplexity": 50}
    result = await client.gql("{ a: books(first: 10) { author { name } } b: books(first: 5) { author { name } } }", status=200)
    assert "errors" not in result
    # Variables apply: the same document is cheap or expensive.
    q = "query Q($n: Int) { books(first: $n) { author { name } } }"
    await client.gql(q, {"n": 5}, status=200)
    result = await client.gql(q, {"n": 500}, headers=GQL, status=400)
    assert result["errors"][0]["extensions"]["cost"] == 1000


async def test_cost_computed_once_per_document(plugboard_client):
    from plugboard.plugins.protection.cost import ANALYSIS

    client = await plugboard_client(settings())
    for _ in range(5):
        await client.gql_data(BOOKS)
    assert client.app[ANALYSIS].computed == 1
    # With variables: once per document and variables.
    query = "query Q($n: Int) { books(first: $n) { title } }"
    for _ in range(3):
        await client.gql_data(query, {"n": 5})
    assert client.app[ANALYSIS].computed == 2
    await client.gql_data(query, {"n": 6})
    assert client.app[ANALYSIS].computed == 3


async def test_websocket_operations_are_counted(plugboard_client):
    client = await plugboard_client({"plugins": ["realtime", "books", "protection"], "protection": {"requests": {"max": 3, "window_ms": 60000}}})
    ws = await client.ws()  # the upgrade counts as one
    try:
        assert (await ws.execute(BOOKS))[0]["data"] is not None
        assert (await ws.execute(BOOKS))[0]["data"] is not None
        await ws.subscribe("3", BOOKS)
        messages = await ws.until_complete("3")
        assert messages[-1]["type"] == "error"
        extensions = messages[-1]["payload"][0]["extensions"]
        assert extensions["code"] == "RATE_LIMITED" and extensions["policy"] == "ip"
        assert 1 <= extensions["retryAfter"] <= 60
    finally:
        await ws.close()


def test_the_seeds_variables_reach_protection_and_bad_ones_name_the_variable(tmp_path):
    # The shipped settings.yaml maps RATE_LIMIT_* onto protection.requests.*.
    from pathlib import Path

    from plugboard import keys
    from plugboard.app import create_app
    from plugboard.settings import Settings

    shipped = Path(__file__).resolve().parents[3] / "settings.yaml"
    (tmp_path / "settings.yaml").write_text(shipped.read_text())
    environ = {
        "RATE_LIMIT_WINDOW_MS": "60000",
        "RATE_LIMIT_MAX": "7",
        "RATE_LIMIT_SKIP_FAILED_REQUESTS": "true",
        "PLUGBOARD_SERVER__DATA_DIR": str(tmp_path / "var"),
    }
    config = create_app(Settings.load(tmp_path, environ=environ)).get(keys.PLUGIN_CONFIGS)["protection"]
    assert (config.requests.window_ms, config.requests.max, config.requests.skip_failed_requests) == (60000, 7, True)
    with pytest.raises(ConfigError, match="protection.requests.max = 'abc'.*env RATE_LIMIT_MAX"):
        create_app(Settings.load(tmp_path, environ={**environ, "RATE_LIMIT_MAX": "abc"}))


def test_bad_trusted_proxy_is_a_config_error(plugboard_app):
    with pytest.raises(ConfigError, match="trusted_proxies"):
        plugboard_app({"plugins": ["protection"], "protection": {"trusted_proxies": ["not-an-ip"]}})


async def test_cost_budget_spent_per_client_with_remaining_in_headers(plugboard_client):
    client = await plugboard_client(settings(requests={"max": 100, "window_ms": 60000}, budget={"enabled": True, "max": 50, "window_ms": 60000}))
    q = "{ books(first: 10) { author { name } } }"  # cost 20
    for remaining in (30, 10):
        async with client.post("/graphql", json={"query": q}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["RateLimit-Policy"] == '"ip";q=100;w=60, "cost";q=50;w=60'
            policies = dict(item.split(";", 1) for item in resp.headers["RateLimit"].split(", "))
            assert policies['"cost"'].startswith(f"r={remaining};") and policies['"ip"'].startswith("r=")
    async with client.post("/graphql", json={"query": q}, headers=GQL) as resp:
        assert resp.status == 429
        body = await resp.json()
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert body["errors"][0]["extensions"]["cost"] == 20 and body["errors"][0]["extensions"]["remaining"] == 10
        assert int(resp.headers["Retry-After"]) >= 1
        assert '"cost";r=10;' in resp.headers["RateLimit"]
    # A cheaper query still fits the rest of the budget.
    await client.gql_data("{ books(first: 4) { author { name } } }")


async def test_sse_streams_are_counted(plugboard_client):
    client = await plugboard_client({"plugins": ["realtime", "books", "protection"], "protection": {"requests": {"max": 1, "window_ms": 60000}}})
    body = {"query": "subscription { bookUpdated { title } }"}
    headers = {"Accept": "text/event-stream"}
    async with client.post("/graphql", json=body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["RateLimit"].startswith('"ip";r=0;')
        async with client.post("/graphql", json=body, headers=headers) as refused:
            assert refused.status == 429
            assert "Retry-After" in refused.headers
