"""JWT identity: HS256 and RS256 from JWKS; expired, not yet valid, wrong signature/audience/issuer, alg none, HS256 against RS256 keys; JWKS down."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plugboard import hookimpl
from plugboard.errors import ConfigError

GQL = {"Accept": "application/graphql-response+json"}
WHOAMI = "{ whoami }"


class WhoAmI:
    @hookimpl
    def plugboard_schema(self):
        return "extend type Query { whoami: String }"

    @hookimpl
    def plugboard_resolvers(self):
        async def whoami(parent, args, ctx, info):
            ident = ctx.identity
            return None if ident is None else f"{ident['id']}|{','.join(ctx.roles)}"

        return {"Query.whoami": whoami}


def _settings(**jwt_options):
    return {"plugins": ["protection"], "protection": {"jwt": {"enabled": True, "issuer": "https://issuer", "audience": "api", **jwt_options}}}


def _claims(**over):
    now = int(time.time())
    return {"sub": "alice", "iss": "https://issuer", "aud": "api", "exp": now + 300, "nbf": now - 5, "roles": ["editor"], **over}


async def _status(client, token):
    async with client.post("/graphql", json={"query": WHOAMI}, headers={"Authorization": f"Bearer {token}", **GQL}) as resp:
        return resp.status, await resp.json()


async def test_hs256(plugboard_client):
    client = await plugboard_client(_settings(secret="s3cret-s3cret-s3cret-s3cret-s3cret!"), plugins=[WhoAmI()])
    key = "s3cret-s3cret-s3cret-s3cret-s3cret!"
    status, body = await _status(client, jwt.encode(_claims(), key, algorithm="HS256"))
    assert status == 200 and body["data"]["whoami"] == "alice|editor"
    now = int(time.time())
    bad = {
        "token expired": jwt.encode(_claims(exp=now - 10), key, algorithm="HS256"),
        "token not yet valid": jwt.encode(_claims(nbf=now + 600), key, algorithm="HS256"),
        "token signature invalid": jwt.encode(_claims(), "another-secret-another-secret-1234", algorithm="HS256"),
        "token audience not accepted": jwt.encode(_claims(aud="other"), key, algorithm="HS256"),
        "token issuer not accepted": jwt.encode(_claims(iss="https://evil"), key, algorithm="HS256"),
        "token algorithm 'none' not accepted": jwt.encode(_claims(), None, algorithm="none"),
        "malformed bearer token": "not.a.jwt",
    }
    for message, token in bad.items():
        status, body = await _status(client, token)
        assert (status, body["errors"][0]["message"]) == (401, message)
    # Anonymous stays anonymous.
    async with client.post("/graphql", json={"query": WHOAMI}) as resp:
        assert (await resp.json())["data"]["whoami"] is None


@pytest.fixture
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(private_key, kid="k1"):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]}


async def test_rs256_from_jwks_cached_when_down_and_confusion_refused(plugboard_client, aiohttp_server, rsa_key, caplog):
    state = {"up": True, "calls": 0}

    async def jwks(request):
        state["calls"] += 1
        if not state["up"]:
            raise web.HTTPServiceUnavailable()
        return web.json_response(_jwks(rsa_key))

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    client = await plugboard_client(_settings(jwks_url=str(server.make_url("/jwks")), jwks_cache_ttl="1s", jwks_min_refresh="1s"), plugins=[WhoAmI()])
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    status, body = await _status(client, token)
    assert status == 200 and body["data"]["whoami"] == "alice|editor"
    # Algorithm confusion: HS256 signed with the public key's PEM.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _forge_hs256(_claims(sub="mallory"), pem, kid="k1")
    status, body = await _status(client, forged)
    assert (status, body["errors"][0]["message"]) == (401, "token algorithm 'HS256' not accepted")
    # The endpoint goes down: the cached keys keep working (a warning is logged).
    state["up"] = False
    await asyncio.sleep(1.1)
    with caplog.at_level(logging.WARNING, logger="plugboard.protection"):
        status, body = await _status(client, token)
    assert status == 200
    assert "using the cached keys" in caplog.text


async def test_jwks_down_with_nothing_cached_is_a_clear_401(plugboard_client, caplog):
    client = await plugboard_client(_settings(jwks_url="http://127.0.0.1:1/jwks", jwks_timeout="1s"), plugins=[WhoAmI()])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with caplog.at_level(logging.ERROR, logger="plugboard.protection"):
        status, body = await _status(client, jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"}))
    assert (status, body["errors"][0]["message"]) == (401, "token keys unavailable; try again later")
    assert "no keys cached" in caplog.text


def test_jwt_enabled_without_keys_is_a_config_error(plugboard_app):
    with pytest.raises(ConfigError, match="protection.jwt"):
        plugboard_app(_settings())


def _forge_hs256(claims, secret: bytes, kid: str) -> str:
    # PyJWT refuses to sign HS256 with a PEM key, as an attacker's tool would not.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


async def test_es256_from_jwks_and_keys_of_the_wrong_type(plugboard_client, aiohttp_server, rsa_key):
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    keys = {"keys": [{**ec_jwk, "kid": "ec1", "alg": "ES256", "use": "sig"}, *_jwks(rsa_key, kid="rsa1")["keys"]]}

    async def jwks(request):
        return web.json_response(keys)

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    client = await plugboard_client(_settings(jwks_url=str(server.make_url("/jwks"))), plugins=[WhoAmI()])
    status, body = await _status(client, jwt.encode(_claims(sub="erin"), ec_key, algorithm="ES256", headers={"kid": "ec1"}))
    assert (status, body["data"]["whoami"]) == (200, "erin|editor")
    status, body = await _status(client, jwt.encode(_claims(sub="ron"), rsa_key, algorithm="RS256", headers={"kid": "rsa1"}))
    assert (status, body["data"]["whoami"]) == (200, "ron|editor")
    other = ec.generate_private_key(ec.SECP256R1())
    refused = {
        # Signed by a key that is not in the set, under a kid that is.
        "token signature invalid": jwt.encode(_claims(), other, algorithm="ES256", headers={"kid": "ec1"}),
        # An RS256 token naming the EC key's kid (and the other way round): never a 500.
        "rs-on-ec": jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "ec1"}),
        "ec-on-rs": jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": "rsa1"}),
        "token signed with an unknown key": jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": "nope"}),
    }
    for message, token in refused.items():
        status, body = await _status(client, token)
        assert status == 401, (message, body)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        if " " in message:
            assert body["errors"][0]["message"] == message
