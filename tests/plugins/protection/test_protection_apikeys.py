"""API keys: GraphQL management, the identity they give, bad keys (malformed, unknown, revoked, expired), a key's own limits, the CLI, revocation and limits across two servers."""

from __future__ import annotations

import datetime as dt

import aiohttp
import sqlalchemy as sa

from plugboard.plugins.protection.apikeys import hash_key
from plugboard.plugins.protection.appkeys import API_KEYS

ADMIN = {"Authorization": "Bearer admin-secret"}
GQL = {"Accept": "application/graphql-response+json"}
BOOKS = "{ books(first: 1) { title } }"
CREATE = "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id prefix name scopes owner revokedAt } } }"


def settings(**extra):
    return {"plugins": ["books", "protection"], "server": {"admin_token": "admin-secret"}, "protection": {"api_keys": True, **extra}}


async def test_create_use_list_revoke(plugboard_client):
    client = await plugboard_client(settings())
    created = (await client.gql(CREATE, {"i": {"name": "ci", "owner": "alice", "scopes": ["read", "jobs:admin"]}}, headers=ADMIN))["data"]["createApiKey"]
    secret, key = created["secret"], created["key"]
    assert secret.startswith(key["prefix"] + "_") and len(secret) == len("pbk_12345678_") + 43
    assert key["scopes"] == ["read", "jobs:admin"] and key["owner"] == "alice"
    # Stored hashed: the secret is nowhere in the table.
    async with client.app[API_KEYS].records.connect() as conn:
        row = (await conn.execute(sa.select(client.app[API_KEYS].table))).one()
    assert row.hash == hash_key(secret) and secret not in repr(tuple(row))
    # Accepted as X-API-Key and as a pbk_ bearer.
    await client.gql_data(BOOKS, headers={"X-API-Key": secret})
    await client.gql_data(BOOKS, headers={"Authorization": f"Bearer {secret}"})
    listed = (await client.gql("{ apiKeys { id prefix lastUsedAt } }", headers=ADMIN))["data"]["apiKeys"]
    assert [k["id"] for k in listed] == [key["id"]] and listed[0]["lastUsedAt"] is not None
    assert "secret" not in str(listed)
    # A read-scoped key is no admin: it sees its owner's keys only, not another owner's.
    result = await client.gql('{ apiKeys(owner: "bob") { id } }', headers={"X-API-Key": secret})
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await client.gql("mutation($id: ID!) { revokeApiKey(id: $id) }", {"id": key["id"]}, headers=ADMIN))["data"]["revokeApiKey"] is True
    result = await client.gql(BOOKS, headers={"X-API-Key": secret, **GQL}, status=401)
    assert result["errors"][0]["message"] == "this API key was revoked"
    assert (await client.gql("mutation($id: ID!) { revokeApiKey(id: $id) }", {"id": key["id"]}, headers=ADMIN))["data"]["revokeApiKey"] is False


async def test_owners_list_and_revoke_their_own_keys(plugboard_client):
    client = await plugboard_client(settings())
    keys = client.app[API_KEYS]
    alice_key, alice = await keys.create(name="alice ci", owner="alice")
    alice_2, _ = await keys.create(name="alice laptop", owner="alice")
    bob_key, bob = await keys.create(name="bob ci", owner="bob")
    listed = (await client.gql_data("{ apiKeys { id owner } }", headers={"X-API-Key": alice}))["apiKeys"]
    assert sorted(k["id"] for k in listed) == sorted([alice_key.id, alice_2.id])
    assert (await client.gql_data('{ apiKeys(owner: "alice") { id } }', headers={"X-API-Key": alice}))["apiKeys"]
    # Bob's key reads as unknown to Alice: nothing revoked, nothing learnt.
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) }"
    assert (await client.gql_data(revoke, {"id": bob_key.id}, headers={"X-API-Key": alice}))["revokeApiKey"] is False
    await client.gql_data("{ apiKeys { id } }", headers={"X-API-Key": bob})
    assert (await client.gql_data(revoke, {"id": alice_2.id}, headers={"X-API-Key": alice}))["revokeApiKey"] is True
    listed = (await client.gql_data("{ apiKeys { id revokedAt } }", headers={"X-API-Key": alice}))["apiKeys"]
    assert {k["id"]: k["revokedAt"] is not None for k in listed} == {alice_key.id: False, alice_2.id: True}
    # Admins see every key; the anonymous none; only admins create.
    assert len((await client.gql_data("{ apiKeys { id } }", headers=ADMIN))["apiKeys"]) == 3
    result = await client.gql("{ apiKeys { id } }", headers=GQL)
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    result = await client.gql(revoke, {"id": bob_key.id}, headers=GQL, status=None)
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    result = await client.gql(CREATE, {"i": {"name": "mine"}}, headers={"X-API-Key": alice})
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_bad_keys_are_refused(plugboard_client):
    client = await plugboard_client(settings())
    for bad, message in (
        ("nonsense", "malformed API key"),
        ("pbk_zzzzzzzz_" + "a" * 43, "malformed API key"),
        ("pbk_12345678_" + "a" * 43, "unknown API key"),
    ):
        result = await client.gql(BOOKS, headers={"X-API-Key": bad, **GQL}, status=401)
        assert result["errors"][0] == {"message": message, "extensions": {"code": "UNAUTHENTICATED"}}
    keys = client.app[API_KEYS]
    key, secret = await keys.create(name="old", expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    async with keys.records.begin() as conn:
        await conn.execute(keys.table.update().where(keys.table.c.id == key.id).values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    result = await client.gql(BOOKS, headers={"X-API-Key": secret, **GQL}, status=401)
    assert result["errors"][0]["message"] == "this API key has expired"
    # Bad input to createApiKey.
    result = await client.gql(CREATE, {"i": {"name": "x", "scopes": ["Not A Scope"]}}, headers=ADMIN)
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    result = await client.gql(CREATE, {"i": {"name": "x", "expiresAt": "2001-01-01T00:00:00"}}, headers=ADMIN)
    assert "in the past" in result["errors"][0]["message"]
    # An expiry as this API writes them (offset, fractions) or with Z is read as the instant it names.
    for sent in ("2001-01-01T00:00:00.500000+02:00", "2001-01-01T00:00:00Z"):
        result = await client.gql(CREATE, {"i": {"name": "x", "expiresAt": sent}}, headers=ADMIN)
        assert "in the past" in result["errors"][0]["message"]
    later = (await client.gql(CREATE, {"i": {"name": "later", "expiresAt": "2999-01-01T12:00:00+02:00"}}, headers=ADMIN))["data"]["createApiKey"]
    stored = next(k for k in await client.app[API_KEYS].list() if k.id == later["key"]["id"])
    assert stored.expires_at == dt.datetime(2999, 1, 1, 10, tzinfo=dt.timezone.utc)
    result = await client.gql(CREATE, {"i": {"name": "x"}})
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_an_admin_scoped_key_manages_keys_and_budgets_count_per_key(plugboard_client):
    client = await plugboard_client(settings(budget={"enabled": True, "max": 100, "window_ms": 60000}))
    _, admin = await client.app[API_KEYS].create(name="ops", scopes=["admin"])
    _, other = await client.app[API_KEYS].create(name="other", scopes=["read"])
    await client.gql_data("{ apiKeys { id } }", headers={"X-API-Key": admin})
    async with client.post("/graphql", json={"query": "{ books(first: 10) { author { name } } }"}, headers={"X-API-Key": other}) as resp:
        assert '"cost";r=80;' in resp.headers["RateLimit"]
    async with client.post("/graphql", json={"query": "{ books(first: 10) { author { name } } }"}, headers={"X-API-Key": admin}) as resp:
        # The same IP, another key: its own budget (apiKeys above cost it 10: a list of 10 objects by default).
        assert '"cost";r=70;' in resp.headers["RateLimit"]


def _items(header: str) -> set[str]:
    return {item.strip() for item in header.split(",")}


LIMITS = "mutation($id: ID!, $r: ApiKeyRateLimitInput, $b: Int) { setApiKeyLimits(id: $id, rateLimit: $r, costBudget: $b) { id rateLimit { max windowMs } costBudget } }"


async def test_a_key_carries_its_own_request_limit_and_budget(plugboard_client):
    budget = {"enabled": True, "max": 100, "window_ms": 60000}
    client = await plugboard_client(settings(requests={"max": 100, "window_ms": 60000, "per_key": {"max": 50}}, budget=budget))
    created = await client.gql_data(
        "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id rateLimit { max windowMs } costBudget } } }",
        {"i": {"name": "partner", "rateLimit": {"max": 2, "windowMs": 30000}, "costBudget": 15}},
        headers=ADMIN,
    )
    key, secret = created["createApiKey"]["key"], created["createApiKey"]["secret"]
    assert key["rateLimit"] == {"max": 2, "windowMs": 30000} and key["costBudget"] == 15
    _, plain = await client.app[API_KEYS].create(name="plain")
    query = {"query": "{ books(first: 10) { title } }"}
    async with client.post("/graphql", json=query, headers={"X-API-Key": secret}) as resp:
        assert resp.status == 200
        assert _items(resp.headers["RateLimit-Policy"]) == {'"cost";q=15;w=60', '"key";q=2;w=30'}
        assert '"cost";r=5;' in resp.headers["RateLimit"] and '"key";r=1;' in resp.headers["RateLimit"]
    async with client.post("/graphql", json=query, headers={"X-API-Key": secret, **GQL}) as resp:
        # The second query would cost 10 of the 5 left: refused by the key's budget.
        body = await resp.json()
        assert resp.status == 429 and body["errors"][0]["extensions"]["budget"] == 15
    async with client.post("/graphql", json=query, headers={"X-API-Key": secret, **GQL}) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["errors"][0]["extensions"]["policy"] == "key" and int(resp.headers["Retry-After"]) <= 30
    async with client.post("/graphql", json=query, headers={"X-API-Key": plain}) as resp:
        assert resp.status == 200 and _items(resp.headers["RateLimit-Policy"]) == {'"cost";q=100;w=60', '"key";q=50;w=60'}
    # Cleared: the deployment's policies again, at the next request.
    cleared = await client.gql_data(LIMITS, {"id": key["id"]}, headers=ADMIN)
    assert cleared["setApiKeyLimits"] == {"id": key["id"], "rateLimit": None, "costBudget": None}
    async with client.post("/graphql", json=query, headers={"X-API-Key": secret}) as resp:
        assert resp.status == 200 and _items(resp.headers["RateLimit-Policy"]) == {'"cost";q=100;w=60', '"key";q=50;w=60'}
    # Without windowMs, per_key's window; the listing shows each key's own.
    await client.gql_data(LIMITS, {"id": key["id"], "r": {"max": 7}}, headers=ADMIN)
    listed = (await client.gql_data("{ apiKeys { name rateLimit { max windowMs } costBudget } }", headers=ADMIN))["apiKeys"]
    assert {k["name"]: (k["rateLimit"], k["costBudget"]) for k in listed} == {"partner": ({"max": 7, "windowMs": None}, None), "plain": (None, None)}
    async with client.post("/graphql", json=query, headers={"X-API-Key": secret}) as resp:
        assert '"key";q=7;w=60' in resp.headers["RateLimit-Policy"]


async def test_bad_key_limits_are_refused(plugboard_client):
    client = await plugboard_client(settings())
    key, secret = await client.app[API_KEYS].create(name="k", scopes=["read"])
    for variables, code in (
        ({"id": key.id, "r": {"max": 0}}, "BAD_USER_INPUT"),
        ({"id": key.id, "r": {"max": 5, "windowMs": -1}}, "BAD_USER_INPUT"),
        ({"id": key.id, "b": 0}, "BAD_USER_INPUT"),
        ({"id": "nope", "b": 5}, "NOT_FOUND"),
    ):
        result = await client.gql(LIMITS, variables, headers=ADMIN)
        assert result["errors"][0]["extensions"]["code"] == code, (variables, result)
    result = await client.gql(CREATE, {"i": {"name": "x", "costBudget": -5}}, headers=ADMIN)
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # A key cannot raise its own limits; nothing was written by the refusals.
    result = await client.gql(LIMITS, {"id": key.id, "r": {"max": 10**6}}, headers={"X-API-Key": secret})
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await client.app[API_KEYS].list())[0].limits.rate_limit_max is None


def test_the_apikey_command(tmp_path, capsys):
    from plugboard.cli import main
    from plugboard.testing_process import write_project

    project = write_project(tmp_path / "proj", settings())
    assert main(["apikey", "--root", str(project), "create", "--name", "ci", "--scope", "read", "--scope", "write"]) == 0
    out = capsys.readouterr().out
    key_id = out.split("id:")[1].split()[0]
    assert "pbk_" in out and "shown this once" in out
    assert main(["apikey", "--root", str(project), "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "active" in listed and "read,write" in listed
    assert main(["apikey", "--root", str(project), "revoke", key_id]) == 0
    assert main(["apikey", "--root", str(project), "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["apikey", "--root", str(project), "revoke", key_id]) == 1
    assert main(["apikey", "--root", str(project), "create", "--name", "bad", "--scope", "NOPE"]) == 2
    assert main(["apikey", "--root", str(project), "limits", key_id, "--max", "30", "--window-ms", "1000", "--budget", "500"]) == 0
    assert "max=30/1000ms budget=500" in capsys.readouterr().out
    assert main(["apikey", "--root", str(project), "list"]) == 0
    assert "max=30/1000ms budget=500" in capsys.readouterr().out
    assert main(["apikey", "--root", str(project), "limits", key_id, "--budget", "0"]) == 2
    assert main(["apikey", "--root", str(project), "limits", "nope", "--max", "3"]) == 1


async def test_revoked_through_one_server_refused_by_the_other(plugboard_serve, tmp_path):
    from plugboard.testing_process import write_project

    project = write_project(tmp_path / "shared", settings())
    a = plugboard_serve(project)
    b = plugboard_serve(project)
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/graphql", json={"query": CREATE, "variables": {"i": {"name": "ci"}}}, headers=ADMIN) as resp:
            created = (await resp.json())["data"]["createApiKey"]
        for server in (a, b):
            async with http.post(server.url + "/graphql", json={"query": BOOKS}, headers={"X-API-Key": created["secret"]}) as resp:
                assert resp.status == 200, await resp.text()
        # A key's own limit set through A is B's policy for its next request.
        async with http.post(a.url + "/graphql", json={"query": LIMITS, "variables": {"id": created["key"]["id"], "r": {"max": 3}}}, headers=ADMIN) as resp:
            assert (await resp.json())["data"]["setApiKeyLimits"]["rateLimit"]["max"] == 3
        async with http.post(b.url + "/graphql", json={"query": BOOKS}, headers={"X-API-Key": created["secret"]}) as resp:
            assert '"key";q=3;' in resp.headers["RateLimit-Policy"]
        async with http.post(a.url + "/graphql", json={"query": "mutation($id: ID!) { revokeApiKey(id: $id) }", "variables": {"id": created["key"]["id"]}}, headers=ADMIN) as resp:
            assert (await resp.json())["data"]["revokeApiKey"] is True
        async with http.post(b.url + "/graphql", json={"query": BOOKS}, headers={"X-API-Key": created["secret"], **GQL}) as resp:
            assert resp.status == 401
