"""Per-user and per-key request policies, key overrides, forged credentials, WebSocket floods (4429), health endpoints; real servers on loopback."""

from __future__ import annotations

import time

import jwt
import pytest

from plugboard.errors import ConfigError
from plugboard.plugins.protection.appkeys import API_KEYS
from plugboard.plugins.protection.limiter import CLOSE_RATE_LIMITED
from plugboard.testing_clients import TransportWS

BOOKS = "{ books(first: 1) { title } }"
GQL = {"Accept": "application/graphql-response+json"}
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + 300, "nbf": now - 5}, SECRET, algorithm="HS256")


def settings(requests, **protection):
    return {
        "plugins": ["realtime", "books", "protection"],
        "server": {"admin_token": "admin-secret"},
        "protection": {"requests": requests, "jwt": {"enabled": True, "secret": SECRET}, "api_keys": True, **protection},
    }


async def post(client, headers=None):
    async with client.post("/graphql", json={"query": BOOKS}, headers={**GQL, **(headers or {})}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_users_have_their_own_policy_and_counter(plugboard_client):
    client = await plugboard_client(settings({"max": 2, "window_ms": 60000, "per_user": {"max": 3}}))
    alice, bob = {"Authorization": f"Bearer {token('alice')}"}, {"Authorization": f"Bearer {token('bob')}"}
    for remaining in (2, 1, 0):
        status, headers, _ = await post(client, alice)
        assert status == 200
        assert headers["RateLimit-Policy"] == '"user";q=3;w=60'
        assert headers["RateLimit"].startswith(f'"user";r={remaining};')
    status, headers, body = await post(client, alice)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" and body["errors"][0]["extensions"]["policy"] == "user"
    # Another user from the same address has a counter of their own, and so has the address.
    assert (await post(client, bob))[0] == 200
    for _ in range(2):
        status, headers, _ = await post(client)
        assert status == 200 and headers["RateLimit-Policy"] == '"ip";q=2;w=60'
    assert (await post(client))[0] == 429


async def test_api_keys_have_their_policy_and_overrides_by_prefix(plugboard_client):
    client = await plugboard_client(settings({"max": 100, "window_ms": 60000, "per_key": {"max": 2, "window_ms": 10000}}))
    keys = client.app[API_KEYS]
    plain, plain_secret = await keys.create(name="plain")
    premium, premium_secret = await keys.create(name="premium")
    # Overrides are settings: a second app over the same store would read them; here, rebuild the limiter's table.
    from plugboard.plugins.protection.limiter import LIMITER, Policy

    client.app[LIMITER].key_overrides = {premium.prefix: Policy("key", 4, 10.0)}
    for _ in range(2):
        status, headers, _ = await post(client, {"X-API-Key": plain_secret})
        assert status == 200 and headers["RateLimit-Policy"] == '"key";q=2;w=10'
    status, headers, body = await post(client, {"X-API-Key": plain_secret})
    assert status == 429 and body["errors"][0]["extensions"]["policy"] == "key"
    for _ in range(4):
        status, headers, _ = await post(client, {"Authorization": f"Bearer {premium_secret}"})
        assert status == 200 and headers["RateLimit-Policy"] == '"key";q=4;w=10'
    assert (await post(client, {"X-API-Key": premium_secret}))[0] == 429


async def test_key_overrides_from_settings(plugboard_client):
    client = await plugboard_client(settings({"max": 100, "window_ms": 60000, "key_overrides": {"pbk_00000000": {"max": 7}}}))
    from plugboard.plugins.protection.limiter import LIMITER

    limiter = client.app[LIMITER]
    assert limiter.key_overrides["pbk_00000000"].max == 7 and limiter.key_overrides["pbk_00000000"].window == 60.0
    assert limiter.key.max == 100


async def test_forged_credentials_count_against_the_address(plugboard_client):
    client = await plugboard_client(settings({"max": 3, "window_ms": 60000}))
    for _ in range(3):
        status, _, _ = await post(client, {"Authorization": "Bearer not-a-jwt"})
        assert status == 401
    # The address is spent: refused before any work, forged token or none.
    assert (await post(client, {"Authorization": "Bearer not-a-jwt"}))[0] == 429
    assert (await post(client))[0] == 429
    # The address is checked before credentials are verified: a real user behind it waits too.
    assert (await post(client, {"Authorization": f"Bearer {token('carol')}"}))[0] == 429


async def test_websocket_connection_flood_closes_4429(plugboard_client):
    client = await plugboard_client(settings({"max": 2, "window_ms": 60000}))
    first = await client.ws()
    second = await TransportWS.connect(client, init=False)
    third = await TransportWS.connect(client, init=False)
    code, reason = await third.closed()
    assert code == CLOSE_RATE_LIMITED and reason.startswith("Too many requests; retry in ")
    assert third.ws.protocol == "graphql-transport-ws"
    # An operation over the limit on an open socket is an error for that operation.
    await first.subscribe("1", BOOKS)
    messages = await first.until_complete("1")
    assert messages[-1]["type"] == "error" and messages[-1]["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    await first.close()
    await second.close()


async def test_websocket_operations_count_under_the_identity(plugboard_client):
    client = await plugboard_client(settings({"max": 1, "window_ms": 60000, "per_user": {"max": 2}}))
    ws = await client.ws({"authorization": f"Bearer {token('dave')}"})  # the upgrade spends the address' one
    try:
        for _ in range(2):
            assert (await ws.execute(BOOKS))[0]["data"] is not None
        await ws.subscribe("3", BOOKS)
        messages = await ws.until_complete("3")
        assert messages[-1]["payload"][0]["extensions"]["policy"] == "user"
    finally:
        await ws.close()


async def test_health_endpoints_are_never_limited(plugboard_client):
    client = await plugboard_client(settings({"max": 1, "window_ms": 60000}))
    await post(client)
    assert (await post(client))[0] == 429
    for _ in range(5):
        for path in ("/healthz", "/readyz"):
            async with client.get(path) as resp:
                assert resp.status == 200 and "RateLimit" not in resp.headers


@pytest.mark.parametrize(
    "requests, problem",
    [
        ({"per_user": {"max": 0}}, "protection.requests.per_user.max"),
        ({"per_key": {"window_ms": -5}}, "protection.requests.per_key.window_ms"),
        ({"key_overrides": {"pbk_1": {"max": "lots"}}}, "protection.requests.key_overrides"),
        ({"per_users": {"max": 3}}, "per_users"),
    ],
)
def test_bad_policies_are_config_errors(plugboard_app, requests, problem):
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        plugboard_app({"plugins": ["protection"], "protection": {"requests": requests}})


def test_bad_budget_override_is_a_config_error(plugboard_app):
    with pytest.raises(ConfigError, match=r"protection\.budget\.key_overrides"):
        plugboard_app({"plugins": ["protection"], "protection": {"budget": {"key_overrides": {"pbk_1": 0}}}})


async def test_skip_failed_requests_for_identified_users(plugboard_client):
    client = await plugboard_client(settings({"max": 100, "window_ms": 60000, "per_user": {"max": 2}, "skip_failed_requests": True}))
    auth = {"Authorization": f"Bearer {token('gina')}"}
    for _ in range(3):
        # Invalid against the schema: a failed request, not counted.
        await client.gql("{ books(first: 1) { nope } }", headers={**auth, **GQL}, status=400)
    for remaining in (1, 0):
        status, headers, _ = await post(client, auth)
        assert status == 200 and headers["RateLimit"].startswith(f'"user";r={remaining};')
    assert (await post(client, auth))[0] == 429


async def test_sse_streams_of_a_user_count_under_the_user(plugboard_client):
    client = await plugboard_client(settings({"max": 100, "window_ms": 60000, "per_user": {"max": 1}}))
    body = {"query": "subscription { bookUpdated { title } }"}
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token('hana')}"}
    async with client.post("/graphql", json=body, headers=headers) as resp:
        assert resp.status == 200
        async with client.post("/graphql", json=body, headers=headers) as refused:
            assert refused.status == 429
            assert "Retry-After" in refused.headers and '"user";r=0;' in refused.headers["RateLimit"]
