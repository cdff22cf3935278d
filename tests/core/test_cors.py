"""``server.cors``: preflights, the headers on every browser-facing route, WebSocket origins, bad settings.

Each test builds its own app and talks to it over loopback with aiohttp's
client, sending the headers a browser would (``Origin``,
``Access-Control-Request-*``). The browser itself is in test_cors_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from core_testkit import echo_plugin, make_plugin
from plugboard import cli, keys
from plugboard.app import create_app
from plugboard.cors import CorsConfig, OriginPolicy
from plugboard.errors import ConfigError
from plugboard.settings import Settings

DEV = {"origins": ["http://localhost:*", "http://127.0.0.1:*", "https://*.example.com", "https://app.example.org"]}
ALLOWED = "https://app.example.org"
EVIL = "https://evil.example.net"
QUERY = {"query": "{ hello }"}
JSON_POST = {"Content-Type": "application/json", "Accept": "application/graphql-response+json"}


def preflight_headers(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        out["Access-Control-Request-Headers"] = headers
    return out


def cors_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


def vary(resp: aiohttp.ClientResponse) -> set[str]:
    return {v.strip().lower() for v in resp.headers.get("Vary", "").split(",") if v.strip()}


class Gate:
    """A plugin middleware standing in for a rate limit: refuses everything, counts what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def plugin(self):
        @web.middleware
        async def gate(request, handler):
            self.seen.append(request.method)
            return web.json_response({"errors": [{"message": "rate limited"}]}, status=429)

        return make_plugin("gate", plugboard_middleware=lambda: [gate])


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app({"server": {"cors": DEV}}, plugins=[echo_plugin()]))


# -- preflights ------------------------------------------------------------------


async def test_allowed_preflight(client):
    resp = await client.options(
        "/graphql",
        headers=preflight_headers("http://localhost:5173", headers="content-type, Authorization, apollo-require-preflight, x-graphql-event-stream-token"),
    )
    assert resp.status == 204, await resp.text()
    h = cors_headers(resp)
    assert h["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert h["Access-Control-Allow-Methods"] == "GET, HEAD, POST, PUT, DELETE"
    assert h["Access-Control-Allow-Headers"] == "content-type, authorization, apollo-require-preflight, x-graphql-event-stream-token"
    assert h["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in h
    assert "origin" in vary(resp)


@pytest.mark.parametrize("path", ["/graphql", "/healthz", "/readyz", "/files/a/b.txt"])
async def test_preflight_on_every_core_route(client, path):
    resp = await client.options(path, headers=preflight_headers(ALLOWED, "GET", "authorization"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_preflight_for_an_unknown_path_is_404(client):
    resp = await client.options("/nowhere", headers=preflight_headers(ALLOWED))
    assert resp.status == 404
    assert cors_headers(resp) == {}


async def test_preflight_from_a_disallowed_origin_is_403_without_cors_headers(client):
    for origin in (EVIL, "https://example.com", "http://app.example.org", "https://app.example.org:8443", "http://localhost.evil.net"):
        resp = await client.options("/graphql", headers=preflight_headers(origin))
        assert resp.status == 403, origin
        assert cors_headers(resp) == {}, origin
        assert "origin" in (await resp.text()) and "server.cors.origins" in await resp.text()


async def test_preflight_asking_for_a_header_not_allowed_is_403(client):
    resp = await client.options("/graphql", headers=preflight_headers(ALLOWED, headers="content-type, x-secret-sauce"))
    assert resp.status == 403
    assert cors_headers(resp) == {}
    assert "'x-secret-sauce'" in await resp.text() and "server.cors.headers" in await resp.text()


async def test_preflight_asking_for_a_method_not_allowed_is_403(client):
    resp = await client.options("/graphql", headers=preflight_headers(ALLOWED, method="PATCH"))
    assert resp.status == 403
    assert cors_headers(resp) == {}
    assert "'PATCH'" in await resp.text()


async def test_origin_null_is_refused_unless_listed(make_app, aiohttp_client):
    for origins in (DEV["origins"], ["*"]):
        client = await aiohttp_client(make_app({"server": {"cors": {"origins": origins}}}, plugins=[echo_plugin()]))
        pre = await client.options("/graphql", headers=preflight_headers("null"))
        assert pre.status == 403 and cors_headers(pre) == {}
        resp = await client.post("/graphql", json=QUERY, headers={"Origin": "null"})
        assert resp.status == 200
        assert cors_headers(resp) == {}
    client = await aiohttp_client(make_app({"server": {"cors": {"origins": ["null"]}}}, plugins=[echo_plugin()]))
    pre = await client.options("/graphql", headers=preflight_headers("null"))
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == "null"


async def test_preflights_come_before_plugin_middleware_and_csrf(make_app, aiohttp_client):
    gate = Gate()
    client = await aiohttp_client(make_app({"server": {"cors": DEV}}, plugins=[echo_plugin(), gate.plugin()]))
    # A multipart upload's preflight: answered here, not by the "rate limit" nor by CSRF prevention.
    resp = await client.options("/graphql", headers=preflight_headers(ALLOWED, "POST", "apollo-require-preflight"))
    assert resp.status == 204
    refused = await client.options("/graphql", headers=preflight_headers(EVIL))
    assert refused.status == 403
    assert gate.seen == []
    # The actual request goes through the plugin middleware, and its answer still carries the grant.
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": ALLOWED})
    assert resp.status == 429 and gate.seen == ["POST"]
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_a_plain_options_request_is_not_a_preflight(client):
    resp = await client.options("/graphql", headers={"Origin": ALLOWED})
    assert resp.status == 405


# -- actual requests -----------------------------------------------------------------


async def test_allowed_origin_gets_the_grant_on_a_query(client):
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": "https://a.b.example.com", **JSON_POST})
    assert resp.status == 200
    assert (await resp.json(content_type=None)) == {"data": {"hello": "hello world"}}
    h = cors_headers(resp)
    assert h["Access-Control-Allow-Origin"] == "https://a.b.example.com"
    assert h["Access-Control-Expose-Headers"] == "x-request-id, ratelimit, ratelimit-policy, retry-after, etag"
    assert "Access-Control-Allow-Credentials" not in h
    assert "origin" in vary(resp)
    assert resp.headers["X-Request-ID"]


async def test_disallowed_origin_is_answered_without_the_grant(client):
    # The server does not refuse (curl could send this too); the browser withholds the answer.
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": EVIL, **JSON_POST})
    assert resp.status == 200
    assert cors_headers(resp) == {}
    assert "origin" in vary(resp)


async def test_no_origin_no_cors_headers(client):
    resp = await client.post("/graphql", json=QUERY)
    assert resp.status == 200 and cors_headers(resp) == {}
    assert "origin" in vary(resp)  # a cache must not hand this answer to a page


async def test_multipart_upload_and_its_csrf_error(client):
    data = aiohttp.FormData(default_to_multipart=True)
    data.add_field("operations", json.dumps({"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}}))
    data.add_field("map", json.dumps({"0": ["variables.f"]}))
    data.add_field("0", b"hello", filename="a.txt", content_type="text/plain")
    resp = await client.post("/graphql", data=data, headers={"Origin": ALLOWED, "apollo-require-preflight": "true"})
    assert resp.status == 200 and (await resp.json()) == {"data": {"upload": {"size": 5}}}
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    # Without the header, CSRF prevention refuses, and the page may read why.
    resp = await client.post("/graphql", data=aiohttp.FormData({"operations": "{}"}, default_to_multipart=True), headers={"Origin": ALLOWED})
    assert resp.status == 400 and "Cross-Site Request Forgery" in await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_health_and_file_downloads(client):
    from plugboard.providers.storage import LocalStorageConfig

    for path in ("/healthz", "/readyz"):
        resp = await client.get(path, headers={"Origin": ALLOWED})
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    app = client.server.app
    storage = await app[keys.PROVIDERS].create("storage", "local", LocalStorageConfig(), app=app, owner="test")
    await storage.put("exports/a.csv", b"id\n1\n", content_type="text/csv")
    resp = await client.get(await storage.url("exports/a.csv", expires_in=60), headers={"Origin": ALLOWED})
    assert resp.status == 200 and await resp.read() == b"id\n1\n"
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    # An error raised as an HTTPException carries the grant too.
    resp = await client.get("/files/exports/a.csv?expires=1&signature=x", headers={"Origin": ALLOWED})
    assert resp.status == 403 and resp.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_star_and_credentials(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"server": {"cors": {"origins": ["*"]}}}, plugins=[echo_plugin()]))
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": EVIL})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    client = await aiohttp_client(make_app({"server": {"cors": {"origins": [ALLOWED], "credentials": True, "max_age": "1h"}}}, plugins=[echo_plugin()]))
    pre = await client.options("/graphql", headers=preflight_headers(ALLOWED))
    assert pre.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert pre.headers["Access-Control-Allow-Credentials"] == "true"
    assert pre.headers["Access-Control-Max-Age"] == "3600"
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": ALLOWED})
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_no_origins_configured(make_app, aiohttp_client):
    client = await aiohttp_client(make_app(plugins=[echo_plugin()]))
    pre = await client.options("/graphql", headers=preflight_headers("http://localhost:3000"))
    assert pre.status == 403 and cors_headers(pre) == {}
    resp = await client.post("/graphql", json=QUERY, headers={"Origin": "http://localhost:3000"})
    assert resp.status == 200 and cors_headers(resp) == {} and "Vary" not in resp.headers


@pytest.mark.parametrize(
    "pattern, yes, no",
    [
        ("https://*.example.com", ["https://a.example.com", "https://a.b.example.com", "https://A.Example.com"], ["https://example.com", "http://a.example.com", "https://a.example.com:8443", "https://evilexample.com", "https://a.example.com.evil.net"]),
        ("http://localhost:*", ["http://localhost", "http://localhost:5173", "http://localhost:80"], ["https://localhost:5173", "http://localhost.evil.net", "http://127.0.0.1:5173"]),
        ("https://app.example.com:443", ["https://app.example.com"], ["https://app.example.com:8443"]),
        ("http://[::1]:*", ["http://[::1]:8080"], ["http://[::2]:8080"]),
        ("*", ["https://anything.test", "chrome-extension://abc"], ["null", "not an origin", "https://a.test/path"]),
    ],
)
def test_origin_patterns(pattern, yes, no):
    policy = OriginPolicy(CorsConfig(origins=(pattern,)))
    for origin in yes:
        assert policy.allows(origin), origin
    for origin in no:
        assert not policy.allows(origin), origin


# -- WebSocket upgrades ----------------------------------------------------------------


@pytest.fixture
async def realtime_client(make_app, aiohttp_client):
    app = make_app({"plugins": ["realtime"], "server": {"cors": {"origins": [ALLOWED]}}})
    return await aiohttp_client(app)


@pytest.mark.parametrize("path, protocols", [("/graphql", ("graphql-transport-ws",)), ("/ws", ())])
async def test_websocket_origins(realtime_client, path, protocols):
    client = realtime_client
    same = str(client.make_url("")).rstrip("/")
    for origin in (None, ALLOWED, same):
        ws = await client.ws_connect(path, origin=origin, protocols=protocols)
        assert not ws.closed, origin
        await ws.close()
    for origin in (EVIL, "null", "http://localhost:1234", same.replace("127.0.0.1", "localhost"), "https://app.example.org.evil.net"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await client.ws_connect(path, origin=origin, protocols=protocols)
        assert e.value.status == 403, origin


async def test_websocket_same_origin_only_by_default(make_app, aiohttp_client):
    client = await aiohttp_client(make_app({"plugins": ["realtime"]}))
    same = str(client.make_url("")).rstrip("/")
    ws = await client.ws_connect("/graphql", origin=same, protocols=("graphql-transport-ws",))
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect("/graphql", origin="http://localhost:5173", protocols=("graphql-transport-ws",))
    assert e.value.status == 403


async def test_sse_and_events_carry_the_grant(realtime_client):
    client = realtime_client
    headers = {"Origin": ALLOWED, "Accept": "text/event-stream"}
    async with client.get("/graphql", params={"query": "{ __typename }"}, headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "next" in (await resp.text())
    async with client.get("/events", params={"topic": "public.news"}, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    # graphql-sse single connection mode: PUT reserves, with the token header on later requests.
    pre = await client.options("/graphql", headers=preflight_headers(ALLOWED, "PUT", "x-graphql-event-stream-token"))
    assert pre.status == 204
    async with client.get("/events", params={"topic": "public.news"}, headers={**headers, "Origin": EVIL}) as resp:
        assert resp.status == 200 and cors_headers(resp) == {}


# -- settings ------------------------------------------------------------------------------


def _problems(make_app, cors: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        make_app({"server": {"cors": cors}})
    return {p.key: p.reason for p in e.value.problems}


def test_star_with_credentials_is_a_settings_error(make_app):
    problems = _problems(make_app, {"origins": ["*"], "credentials": True})
    assert list(problems) == ["server.cors.credentials"]
    assert "'*'" in problems["server.cors.credentials"] and "server.cors.origins" in problems["server.cors.credentials"]


@pytest.mark.parametrize(
    "origin, reason",
    [
        ("https://app.example.com/", "no path"),
        ("app.example.com", "scheme://host"),
        ("https://api.*.example.com", "leading subdomains"),
        ("https://*example.com", "not an origin"),
        ("http://localhost:70000", "port 70000"),
        ("https://user@app.example.com", "not an origin"),
        ("", "not an origin"),
    ],
)
def test_malformed_origin_is_a_settings_error(make_app, origin, reason):
    problems = _problems(make_app, {"origins": ["https://fine.example.com", origin]})
    assert list(problems) == ["server.cors.origins"]
    assert repr(origin) in problems["server.cors.origins"] and reason in problems["server.cors.origins"]


def test_other_bad_values(make_app):
    problems = _problems(make_app, {"methods": ["GET", "P OST"], "headers": ["x:y"], "max_age": "-1s", "origin": ["x"]})
    assert set(problems) == {"server.cors.methods", "server.cors.headers", "server.cors.max_age", "server.cors.origin"}


def test_bad_cors_setting_exits_2(tmp_path, capsys):
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"plugins": [], "server": {"data_dir": "var", "cors": {"origins": ["*"], "credentials": True}}}))
    assert cli.main(["check", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "server.cors.credentials = True (from settings.yaml" in err


def test_shipped_defaults():
    repo = Path(__file__).resolve().parents[2]
    shipped = Settings.load(repo).section("server")["cors"]
    assert shipped["origins"] == ["http://localhost:*", "http://127.0.0.1:*"]
    assert Settings.load(repo, env="production").section("server")["cors"]["origins"] == []
    assert CorsConfig().origins == ()


def test_check_shows_the_policy(tmp_path, capsys):
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"plugins": [], "server": {"data_dir": "var", "cors": {"origins": ["https://app.example.com"], "credentials": True}}}))
    assert cli.main(["check", "--root", str(tmp_path)]) == 0
    # check wraps long lines at 100 columns: compare the text, not the layout.
    out = " ".join(capsys.readouterr().out.split())
    assert "CORS (server.cors): origins https://app.example.com" in out
    assert "credentials true; preflight max-age 600s" in out
    assert "WebSocket Origin: this server's own origin and the CORS origins" in out


def test_two_apps_two_policies(tmp_path):
    a = create_app(Settings.from_mapping({"plugins": [], "server": {"data_dir": str(tmp_path), "cors": {"origins": [ALLOWED]}}}, root=tmp_path))
    b = create_app(Settings.from_mapping({"plugins": [], "server": {"data_dir": str(tmp_path)}}, root=tmp_path))
    assert a[keys.CORS_POLICY].allows(ALLOWED) and not b[keys.CORS_POLICY].allows(ALLOWED)
