"""Prometheus /metrics: admin token, operations by name and outcome, latency, cost, refusals, cache counters; bounded labels."""

from __future__ import annotations

ADMIN = {"Authorization": "Bearer admin-secret"}


async def _scrape(client, headers=ADMIN, status=200):
    async with client.get("/metrics", headers=headers) as resp:
        assert resp.status == status
        return await resp.text()


async def test_metrics(plugboard_client):
    client = await plugboard_client(
        {"plugins": ["cache", "books", "protection"], "server": {"admin_token": "admin-secret"}, "protection": {"requests": {"max": 4, "window_ms": 60000}}}
    )
    await client.gql_data("query Shelf { books(first: 2) { title } }")
    await client.gql("{ nope }")
    await client.gql("query Shelf { books(first: 2) { title } }")
    async with client.post("/graphql", json={"query": "{ books { title } }"}) as resp:
        assert resp.status == 200
    async with client.post("/graphql", json={"query": "{ books { title } }"}) as resp:
        assert resp.status == 429
    await _scrape(client, headers={}, status=401)
    await _scrape(client, headers={"Authorization": "Bearer wrong"}, status=401)
    text = await _scrape(client)
    # The second Shelf was a response-cache hit: the cache plugin (declared first) answered it.
    assert 'plugboard_graphql_operations_total{operation="Shelf",outcome="ok",type="query"} 1.0' in text
    assert 'plugboard_graphql_operation_seconds_count{operation="Shelf",type="query"} 1.0' in text
    assert 'plugboard_graphql_operation_cost_count{operation="Shelf"} 1.0' in text
    assert 'plugboard_graphql_operations_total{operation="anonymous",outcome="ok",type="query"} 1.0' in text
    assert "plugboard_ratelimit_refusals_total 1.0" in text
    assert 'plugboard_cache_hits_total{layer="response"} 1.0' in text


async def test_operation_labels_are_bounded(plugboard_client):
    from plugboard.plugins.protection.metrics import MAX_OPERATION_NAMES, METRICS

    client = await plugboard_client({"plugins": ["books", "protection"], "protection": {"metrics": {"public": True}}})
    m = client.app[METRICS]
    assert m.operation_label("bad name!") == "other"
    for i in range(MAX_OPERATION_NAMES + 5):
        m.operation_label(f"Op{i}")
    assert m.operation_label("OneTooMany") == "other"
    assert "plugboard_graphql" in await _scrape(client, headers={})
