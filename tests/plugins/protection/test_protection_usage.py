"""Usage analytics: per key, user and operation per minute, on SQLite and PostgreSQL; groupBy; retention; bad input; two instances adding to one table."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest
import sqlalchemy as sa

from plugboard.plugins.protection.appkeys import API_KEYS
from plugboard.plugins.protection.usage import USAGE
from plugboard.testing import eventually

ADMIN = {"Authorization": "Bearer admin-secret"}
USAGE_QUERY = """query Usage($g: [UsageGroupBy!], $k: ID, $o: String, $from: DateTime, $to: DateTime) {
  apiUsage(groupBy: $g, key: $k, operation: $o, from: $from, to: $to) {
    start key user operation requests errors cost latencyAvgMs latency { leMs count }
  }
}"""


def settings(**extra):
    return {
        "plugins": ["books", "protection"],
        "server": {"admin_token": "admin-secret"},
        "protection": {"api_keys": True, "usage": {"enabled": True, "flush_interval": "0.1s"}, **extra},
    }


@pytest.fixture(params=["sqlite", "postgresql"])
async def client(request, plugboard_client):
    data = settings()
    if request.param == "postgresql":
        data["records"] = {"url": request.getfixturevalue("postgres_url")}
    client = await plugboard_client(data)
    yield client
    await client.close()  # release the pool before postgres_url drops the database


async def test_usage_per_key_user_and_operation(client):
    keys = client.app[API_KEYS]
    ci, ci_secret = await keys.create(name="ci", owner="alice")
    for _ in range(3):
        await client.gql_data("query Shelf { books(first: 2) { title } }", headers={"X-API-Key": ci_secret})
    await client.gql("query Broken { books(first: 2) { nope } }", headers={"X-API-Key": ci_secret}, status=None)
    await client.gql_data("{ books(first: 1) { title } }")

    recorder = client.app[USAGE]

    async def flushed():
        """the Shelf operations and the anonymous one reach the table"""
        # Asked of the recorder, not through apiUsage: the test kit runs every
        # query through both executors, and a flush landing between the two
        # would make them differ.
        now = dt.datetime.now(dt.timezone.utc)
        rows = await recorder.query(start=now - dt.timedelta(hours=1), end=now + dt.timedelta(minutes=1), group_by=["OPERATION"])
        counts = {r["operation"]: r["requests"] for r in rows}
        return counts if counts.get("Shelf") == 3 and counts.get("anonymous") else None

    await eventually(flushed)
    # Stable from here: the admin's own queries count under "Usage", which these leave out.
    rows = (await client.gql_data(USAGE_QUERY, {"g": ["KEY", "OPERATION"], "k": ci.id}, headers=ADMIN))["apiUsage"]
    rows = {(r["key"], r["operation"]): r for r in rows}
    shelf = rows[(ci.id, "Shelf")]
    assert shelf["errors"] == 0 and shelf["cost"] == 3 * 2 and shelf["user"] is None
    assert sum(b["count"] for b in shelf["latency"]) == 3 and shelf["latencyAvgMs"] > 0
    assert shelf["latency"][-1]["leMs"] is None and shelf["latency"][0]["leMs"] == 5.0
    # A document that does not validate never reaches the steps; one that executes with errors counts as an error.
    assert (ci.id, "Broken") not in rows
    anonymous = (await client.gql_data(USAGE_QUERY, {"g": ["KEY", "OPERATION"], "o": "anonymous"}, headers=ADMIN))["apiUsage"]
    assert [(r["key"], r["requests"]) for r in anonymous] == [(None, 1)]

    by_user = (await client.gql_data(USAGE_QUERY, {"g": ["USER", "DAY"], "o": "Shelf"}, headers=ADMIN))["apiUsage"]
    assert [(r["user"], r["requests"]) for r in by_user] == [("alice", 3)]
    assert by_user[0]["start"].endswith("T00:00:00+00:00")
    only_key = (await client.gql_data(USAGE_QUERY, {"g": [], "k": ci.id}, headers=ADMIN))["apiUsage"]
    assert [r["requests"] for r in only_key] == [3]


async def test_usage_bad_input_and_admins_only(client):
    result = await client.gql(USAGE_QUERY, {"g": ["HOUR"]})
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for variables, message in (
        ({"g": ["HOUR", "DAY"]}, "groupBy takes one of"),
        ({"from": "2026-01-02T00:00:00", "to": "2026-01-01T00:00:00"}, "'to' must be after 'from'"),
        ({"g": ["MINUTE"], "from": "2020-01-01T00:00:00", "to": "2026-01-01T00:00:00"}, "narrow it or group coarser"),
    ):
        result = await client.gql(USAGE_QUERY, variables, headers=ADMIN, status=None)
        assert message in result["errors"][0]["message"], result
        assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    result = await client.gql(USAGE_QUERY, {"g": ["WEEK"]}, headers=ADMIN, status=None)
    assert "WEEK" in result["errors"][0]["message"]


async def test_retention_and_a_failed_flush_keeps_the_counts(client):
    recorder = client.app[USAGE]
    table = recorder.table
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    async with recorder.records.begin() as conn:
        await conn.execute(sa.insert(table).values(minute=old.replace(second=0, microsecond=0), api_key="", user_id="", operation="Old", requests=1, errors=0, cost=0, latency_ms_sum=0.0))
    assert await recorder.cleanup() == 1
    # The store refuses the write (its table is gone): the counts wait for the next flush.
    async with recorder.records.begin() as conn:
        await conn.run_sync(lambda sync: table.drop(sync))
    recorder.record(api_key=None, user=None, operation="Kept", latency=0.002, cost=1, error=False)
    await recorder.flush()
    # (The background flush may have failed first: either way the counts are still here.)
    assert recorder.flush_errors >= 1 and any(k[3] == "Kept" for k in recorder.pending)
    async with recorder.records.begin() as conn:
        await conn.run_sync(lambda sync: table.create(sync))
    await recorder.flush()
    assert not recorder.pending
    async with recorder.records.connect() as conn:
        row = (await conn.execute(sa.select(table).where(table.c.operation == "Kept"))).one()
    assert (row.requests, row.cost, row.le_5ms) == (1, 1, 1)


def test_bad_usage_settings_name_the_key(plugboard_app):
    from plugboard.errors import ConfigError

    with pytest.raises(ConfigError, match="protection.usage.flush_interval"):
        plugboard_app(settings(usage={"enabled": True, "flush_interval": "0s"}))


async def test_two_instances_add_to_the_same_rows(plugboard_serve, postgres_url, tmp_path):
    from plugboard.testing_process import write_project

    data = settings()
    data["records"] = {"url": postgres_url}
    project = write_project(tmp_path / "shared", data)
    a, b = plugboard_serve(project), plugboard_serve(project)
    async with aiohttp.ClientSession() as http:
        for server, n in ((a, 4), (b, 6)):
            for _ in range(n):
                async with http.post(server.url + "/graphql", json={"query": "query Shelf { books(first: 1) { title } }"}) as resp:
                    assert resp.status == 200

        async def shelf():
            """both instances' counts reach the table"""
            async with http.post(a.url + "/graphql", json={"query": USAGE_QUERY, "variables": {"g": ["OPERATION"], "o": "Shelf"}}, headers=ADMIN) as resp:
                rows = (await resp.json())["data"]["apiUsage"]
            return rows if rows and rows[0]["requests"] == 10 else None

        rows = await eventually(shelf, timeout=15)
        assert rows[0]["errors"] == 0 and sum(x["count"] for x in rows[0]["latency"]) == 10
