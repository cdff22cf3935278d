"""Prometheus /metrics: admin token, operations by name and outcome, latency, cost, refusals, cache counters; bounded labels."""

from __future__ import annotations

from plugboard.testing import eventually

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
    # The cache plugin's series come through the plugboard_metrics hook.
    assert 'plugboard_cache_hits_total{layer="response"} 1.0' in text
    assert 'plugboard_cache_hit_ratio{layer="response"} 0.333' in text  # 1 hit, 2 misses


async def test_operation_labels_are_bounded(plugboard_client):
    from plugboard.plugins.protection.metrics import MAX_OPERATION_NAMES, METRICS

    client = await plugboard_client({"plugins": ["books", "protection"], "protection": {"metrics": {"public": True}}})
    m = client.app[METRICS]
    assert m.operation_label("bad name!") == "other"
    for i in range(MAX_OPERATION_NAMES + 5):
        m.operation_label(f"Op{i}")
    assert m.operation_label("OneTooMany") == "other"
    assert "plugboard_graphql" in await _scrape(client, headers={})


async def test_every_plugins_metrics_through_the_hook(plugboard_client):
    """Connection gauges, subscriptions, jobs, cache, email events, guards: each plugin registers its own."""
    from plugboard.plugins.email.keys import EMAIL
    from plugboard.plugins.jobs.keys import JOBS

    client = await plugboard_client(
        {
            "plugins": ["protection", "cache", "realtime", "jobs", "email", "books"],
            "server": {"admin_token": "admin-secret"},
            "protection": {"graphql": {"timeout": "5s"}, "concurrency": {"max": 4}},
        }
    )
    await client.gql_data("query Shelf { books(first: 1) { title } }")
    job = await client.app[JOBS].enqueue("cleanup", {})
    await client.app[JOBS].wait(job.id)
    await client.app[EMAIL].record_event("test", "delivered", address="a@example.com")
    async with await client.ws({"authorization": "Bearer admin-secret"}) as ws:
        await ws.subscribe("1", "subscription Live { jobUpdated(id: \"%s\") { status } }" % job.id)
        await ws.receive_message()
        # Another selection: not shared with the WebSocket's stream, so it gets the current state too.
        sse = await client.sse("subscription Live { jobUpdated(id: \"%s\") { id status } }" % job.id, token="admin-secret")
        await sse.next()
        text = await _scrape(client)
        assert 'plugboard_realtime_connections{pool="websocket"} 1.0' in text
        assert 'plugboard_realtime_connections{pool="sse"} 1.0' in text
        assert 'plugboard_graphql_subscriptions_active{operation="Live",transport="ws"} 1.0' in text
        assert 'plugboard_graphql_subscriptions_active{operation="Live",transport="sse"} 1.0' in text
        await ws.complete("1")
        sse.resp.close()

    async def closed():
        """the subscriptions and connections are gone (an SSE connection is released after its stream)"""
        text = await _scrape(client)
        gone = ('transport="ws"} 0.0', 'transport="sse"} 0.0', 'pool="websocket"} 0.0', 'pool="sse"} 0.0')
        return text if all(line in text for line in gone) else None

    text = await eventually(closed)
    assert 'plugboard_realtime_connections{pool="websocket"} 0.0' in text
    assert 'plugboard_realtime_connections{pool="sse"} 0.0' in text
    assert 'plugboard_jobs{status="COMPLETED",type="cleanup"} 1.0' in text
    assert 'plugboard_email_events{event="delivered"} 1.0' in text
    assert "plugboard_cache_hits_total" in text and "plugboard_cache_misses_total" in text
    assert "plugboard_operations_timed_out_total 0.0" in text
    assert "plugboard_operations_concurrency_refusals_total 0.0" in text
    assert "plugboard_operations_in_flight 0.0" in text
    assert "plugboard_ratelimit_refusals_total 0.0" in text
    assert 'plugboard_graphql_operation_seconds_count{operation="Shelf",type="query"} 1.0' in text


async def test_a_failing_refresh_is_logged_and_the_scrape_goes_on(plugboard_client, caplog):
    from plugboard import hookimpl

    class Broken:
        @hookimpl
        def plugboard_metrics(self, registry):
            from prometheus_client import Counter

            Counter("plugboard_broken_things", "Things", registry=registry).inc()

            async def refresh():
                raise OSError("store down")

            return refresh

    client = await plugboard_client({"plugins": ["protection"], "protection": {"metrics": {"public": True}}}, plugins=[Broken()])
    text = await _scrape(client, headers={})
    assert "plugboard_broken_things_total 1.0" in text
    assert "metrics refresh failed" in caplog.text


def test_tallies_export_the_series_prometheus_client_would():
    from prometheus_client import CollectorRegistry, generate_latest

    from plugboard.plugins.protection.tally import CounterTally, HistogramTally, TallyCollector

    registry = CollectorRegistry(auto_describe=True)
    counter = CounterTally("ops", "operations", ["operation", "outcome"])
    histogram = HistogramTally("cost", "cost", ["operation"], buckets=(1, 5, 10))
    registry.register(TallyCollector(counter, histogram))
    counter.inc(("Shelf", "ok"))
    counter.inc(("Shelf", "ok"))
    for value in (1, 5, 5.5, 11):  # bounds are inclusive (le); 11 only in +Inf
        histogram.observe(("Shelf",), value)
    text = generate_latest(registry).decode()
    assert 'ops_total{operation="Shelf",outcome="ok"} 2.0' in text
    assert 'cost_bucket{le="1.0",operation="Shelf"} 1.0' in text
    assert 'cost_bucket{le="5.0",operation="Shelf"} 2.0' in text
    assert 'cost_bucket{le="10.0",operation="Shelf"} 3.0' in text
    assert 'cost_bucket{le="+Inf",operation="Shelf"} 4.0' in text
    assert 'cost_count{operation="Shelf"} 4.0' in text and 'cost_sum{operation="Shelf"} 22.5' in text


async def test_metrics_are_kept_only_when_someone_may_read_them(plugboard_client):
    from plugboard.plugins.protection.metrics import METRICS

    # Neither an admin token nor public: /metrics could only answer 401, so
    # nothing is counted and the route is not there.
    client = await plugboard_client({"plugins": ["books", "protection"]})
    assert METRICS not in client.app
    await client.gql_data("{ books(first: 1) { title } }")
    await _scrape(client, headers={}, status=404)
    # enabled: true forces them on (a scraper with the admin token set later through the environment, say).
    client = await plugboard_client({"plugins": ["books", "protection"], "protection": {"metrics": {"enabled": True}}})
    assert METRICS in client.app
    await _scrape(client, headers={}, status=401)
    # An admin token turns them on; enabled: false keeps them off.
    client = await plugboard_client({"plugins": ["books", "protection"], "server": {"admin_token": "admin-secret"}})
    await client.gql_data("query One { books(first: 1) { title } }")
    assert 'plugboard_graphql_operations_total{operation="One",outcome="ok",type="query"} 1.0' in await _scrape(client)
    client = await plugboard_client({"plugins": ["books", "protection"], "server": {"admin_token": "admin-secret"}, "protection": {"metrics": {"enabled": False}}})
    await _scrape(client, status=404)


async def test_metrics_enabled_must_be_a_boolean(tmp_path):
    import pytest

    from plugboard.errors import ConfigError
    from plugboard.testing import make_app

    with pytest.raises(ConfigError, match="enabled"):
        make_app({"plugins": ["protection"], "protection": {"metrics": {"enabled": "sometimes"}}}, root=tmp_path)
