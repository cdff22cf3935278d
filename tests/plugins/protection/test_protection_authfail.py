"""Failed-authentication throttle per IP: API keys and JWTs over HTTP, WebSocket connection_init, the inspect endpoint; anonymous requests still pass."""

from __future__ import annotations

import pytest

from plugboard.errors import ConfigError

GQL = {"Accept": "application/graphql-response+json"}
BAD_KEY = "pbk_12345678_" + "a" * 43


def settings(**extra):
    return {
        "plugins": ["realtime", "books", "protection"],
        "server": {"admin_token": "admin-secret", "inspect": True},
        "protection": {"api_keys": True, "auth_failures": {"max": 3, "window_ms": 60000}, **extra},
    }


async def test_guessing_api_keys_is_throttled_per_ip(plugboard_client):
    from plugboard.plugins.protection.appkeys import API_KEYS

    client = await plugboard_client(settings())
    _, good = await client.app[API_KEYS].create(name="ci")
    for _ in range(3):
        body = await client.gql("{ books(first: 1) { title } }", headers={"X-API-Key": BAD_KEY, **GQL}, status=401)
        assert body["errors"][0]["message"] == "unknown API key"
    # The fourth attempt is refused unread — even with the right key, from this address.
    async with client.post("/graphql", json={"query": "{ books(first: 1) { title } }"}, headers={"X-API-Key": good}) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
    assert body["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    assert body["errors"][0]["extensions"]["reason"] == "auth_failures"
    # Without credentials the address still gets anonymous answers.
    assert await client.gql_data("{ books(first: 1) { title } }")
    # The inspect endpoint's admin token is throttled too.
    async with client.get("/_plugboard", headers={"Authorization": "Bearer admin-secret"}) as resp:
        assert resp.status == 429


async def test_inspect_token_guesses_count(plugboard_client):
    client = await plugboard_client(settings())
    for _ in range(3):
        async with client.get("/_plugboard", headers={"Authorization": "Bearer guess"}) as resp:
            assert resp.status == 401
    async with client.get("/_plugboard", headers={"Authorization": "Bearer admin-secret"}) as resp:
        assert resp.status == 429


async def test_websocket_init_failures_close_4429(plugboard_client):
    from plugboard.testing import TransportWS

    client = await plugboard_client(settings())
    for _ in range(3):
        ws = await TransportWS.connect(client, init=False)
        await ws.send({"type": "connection_init", "payload": {"apiKey": BAD_KEY}})
        code, _reason = await ws.closed()
        assert code == 4403
    ws = await TransportWS.connect(client, init=False)
    await ws.send({"type": "connection_init", "payload": {"apiKey": BAD_KEY}})
    code, reason = await ws.closed()
    assert code == 4429, reason


async def test_off_with_zero(plugboard_client):
    client = await plugboard_client(settings(auth_failures={"max": 0}))
    for _ in range(5):
        await client.gql("{ books(first: 1) { title } }", headers={"X-API-Key": BAD_KEY, **GQL}, status=401)


def test_bad_setting_names_the_key(plugboard_app):
    with pytest.raises(ConfigError, match="protection.auth_failures.max"):
        plugboard_app(settings(auth_failures={"max": -1}))
