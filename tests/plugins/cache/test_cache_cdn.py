"""CDN purges: Cloudflare against a local server that checks what its API documents; CloudFront against moto.

Cloudflare's purge_cache API (POST /client/v4/zones/{zone_id}/purge_cache):
``Authorization: Bearer <API token>``, a JSON body with exactly one of
``files``, ``tags``, ``hosts``, ``prefixes`` or ``purge_everything``, at most
30 tags/hosts/prefixes per call, tags without spaces or commas, prefixes
without a scheme; answers ``{"success": true, "errors": [], "messages": [],
"result": {"id": ...}}`` or ``success: false`` with errors (9109 bad token).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from cache_testkit import get, make_app, post
from plugboard.plugins.cache.appkeys import RUNTIME

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
TOKEN = "Y5sBkK8V2h1Lc7w1Ds1xNRvFq3nWpS9a0gHj4kLm"
PURGE_KEYS = ("files", "tags", "hosts", "prefixes", "purge_everything")


class FakeCloudflare:
    """Verifies each purge as Cloudflare's documentation specifies; injects faults on demand."""

    def __init__(self) -> None:
        self.purges: list[dict] = []
        self.refuse = 0  # answer the next N calls 429, then succeed
        self.hang = 0  # never answer the next N calls
        self.problems: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["zone"] != ZONE:
            return self._error(404, 7003, "Could not route to /zones/..., perhaps your object identifier is invalid?")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(403, 9109, "Invalid access token")
        if request.content_type != "application/json":
            self.problems.append(f"content type {request.content_type}")
            return self._error(400, 1012, "Request must contain one of 'purge_everything' or 'files', or 'tags', or 'hosts' or 'prefixes'")
        body = await request.json()
        given = [k for k in PURGE_KEYS if k in body]
        if len(given) != 1 or set(body) - set(PURGE_KEYS):
            self.problems.append(f"body keys {sorted(body)}")
            return self._error(400, 1012, "Request must contain exactly one purge type")
        kind = given[0]
        items = body[kind]
        if kind != "purge_everything":
            if not isinstance(items, list) or not 1 <= len(items) <= 30:
                self.problems.append(f"{kind}: {len(items) if isinstance(items, list) else items!r} items")
                return self._error(400, 1030, "Only 30 items may be purged per request")
            for item in items:
                if not isinstance(item, str) or (kind == "tags" and (" " in item or "," in item or len(item) > 1024)):
                    self.problems.append(f"bad {kind} item {item!r}")
                    return self._error(400, 1021, "Invalid tag")
                if kind == "prefixes" and "://" in item:
                    self.problems.append(f"prefix with a scheme {item!r}")
                    return self._error(400, 1033, "Prefixes must not include the scheme")
        if self.hang:
            self.hang -= 1
            await asyncio.sleep(3600)
        if self.refuse:
            self.refuse -= 1
            return self._error(429, 10000, "Rate limited")
        self.purges.append(body)
        return web.json_response({"success": True, "errors": [], "messages": [], "result": {"id": ZONE}})

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response({"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}, status=status)


@pytest.fixture
async def cloudflare(aiohttp_server):
    fake = FakeCloudflare()
    app = web.Application()
    app.router.add_post("/client/v4/zones/{zone}/purge_cache", fake.handle)
    server = await aiohttp_server(app)
    fake.base = str(server.make_url("/client/v4"))
    return fake


def cf_settings(fake, token=TOKEN, **cdn):
    return {
        "cache": {
            "cdnIntegration": "cloudflare",
            "cloudflare": {"zone_id": ZONE, "api_token": token, "api_base": fake.base, "prefixes": ["api.example.com/graphql"]},
            "cdn": {"batch_window": "0.05s", "backoff": "0.05s", "timeout": "0.3s", **cdn},
        }
    }


async def test_mutation_purges_tags_and_prefixes(aiohttp_client, tmp_path, cloudflare, fixture_plugin):
    client = await aiohttp_client(make_app(tmp_path, cf_settings(cloudflare), plugins=[fixture_plugin]))
    resp, _ = await get(client, "{ item(id: 2) { id name } }")
    assert resp.headers["Cache-Tag"] == "Item:2"
    await post(client, 'mutation { renameItem(id: 2, name: "two") { id name } }')
    await client.app[RUNTIME].purger.flush()
    assert cloudflare.purges == [{"tags": ["Item:2", "Item"]}, {"prefixes": ["api.example.com/graphql"]}]
    assert cloudflare.problems == []


async def test_many_tags_are_batched_by_30(aiohttp_client, tmp_path, cloudflare):
    client = await aiohttp_client(make_app(tmp_path, cf_settings(cloudflare)))
    runtime = client.app[RUNTIME]
    await runtime.invalidate([f"Book:{i}" for i in range(40)])
    await runtime.invalidate(["Book:3", "Author"])  # within the window: one batch, deduplicated
    await runtime.purger.flush()
    tag_calls = [p["tags"] for p in cloudflare.purges if "tags" in p]
    assert [len(t) for t in tag_calls] == [30, 11]
    assert cloudflare.problems == []


async def test_refusals_and_timeouts_are_retried_never_blocking(aiohttp_client, tmp_path, cloudflare, fixture_plugin, caplog):
    cloudflare.refuse, cloudflare.hang = 1, 1
    client = await aiohttp_client(make_app(tmp_path, cf_settings(cloudflare), plugins=[fixture_plugin]))
    started = time.monotonic()
    resp, body = await post(client, 'mutation { renameItem(id: 1, name: "x") { id } }')
    assert resp.status == 200 and body["data"]["renameItem"] == {"id": "1"}
    assert time.monotonic() - started < 0.3
    with caplog.at_level(logging.WARNING, "plugboard.cache.cdn"):
        await client.app[RUNTIME].purger.flush()
    assert {"tags": ["Item:1", "Item"]} in cloudflare.purges
    assert "timed out" in caplog.text and "HTTP 429" in caplog.text
    assert client.app[RUNTIME].purger.failures == 2


async def test_bad_token_is_logged_not_retried(aiohttp_client, tmp_path, cloudflare, caplog):
    client = await aiohttp_client(make_app(tmp_path, cf_settings(cloudflare, token="wrong")))
    runtime = client.app[RUNTIME]
    with caplog.at_level(logging.ERROR, "plugboard.cache.cdn"):
        await runtime.invalidate(["Book"])
        await runtime.purger.flush()
    assert cloudflare.purges == [] and runtime.purger.dropped == 1 and runtime.purger.failures == 1
    assert "HTTP 403" in caplog.text and "Invalid access token" in caplog.text and "wrong" not in caplog.text


async def test_unreachable_cdn_gives_up_after_retries(aiohttp_client, tmp_path, caplog):
    from plugboard.testing_servers import free_port

    settings = {
        "cache": {
            "cdnIntegration": "cloudflare",
            "cloudflare": {"zone_id": ZONE, "api_token": TOKEN, "api_base": f"http://127.0.0.1:{free_port()}/client/v4"},
            "cdn": {"batch_window": 0, "backoff": "0.01s", "retries": 2},
        }
    }
    client = await aiohttp_client(make_app(tmp_path, settings))
    runtime = client.app[RUNTIME]
    with caplog.at_level(logging.ERROR, "plugboard.cache.cdn"):
        await runtime.invalidate(["Book"])
        await runtime.purger.flush()
    assert runtime.purger.failures == 3 and runtime.purger.dropped == 1
    assert "giving up" in caplog.text


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    from plugboard.testing_servers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def test_cloudfront_invalidation_against_moto(aiohttp_client, tmp_path, moto_server, fixture_plugin):
    from aiobotocore.session import get_session

    creds = {"region_name": "us-east-1", "endpoint_url": moto_server, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    async with get_session().create_client("cloudfront", **creds) as cf:
        created = await cf.create_distribution(
            DistributionConfig={
                "CallerReference": "plugboard-test",
                "Origins": {"Quantity": 1, "Items": [{"Id": "api", "DomainName": "api.example.com", "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443, "OriginProtocolPolicy": "https-only"}}]},
                "DefaultCacheBehavior": {"TargetOriginId": "api", "ViewerProtocolPolicy": "allow-all", "MinTTL": 0},
                "Comment": "",
                "Enabled": True,
            }
        )
        dist_id = created["Distribution"]["Id"]
        settings = {
            "cache": {
                "cdnIntegration": "aws",
                "aws": {"distribution_id": dist_id, "endpoint_url": moto_server, "access_key_id": "testing", "secret_access_key": "testing"},
                "cdn": {"batch_window": "0.05s"},
            }
        }
        client = await aiohttp_client(make_app(tmp_path, settings, plugins=[fixture_plugin]))
        await post(client, 'mutation { renameItem(id: 1, name: "x") { id } }')
        await post(client, 'mutation { renameItem(id: 2, name: "y") { id } }')
        await client.app[RUNTIME].purger.flush()
        listed = await cf.list_invalidations(DistributionId=dist_id)
        items = listed["InvalidationList"].get("Items", [])
        assert len(items) == 1  # two mutations within the window: one invalidation
        detail = await cf.get_invalidation(DistributionId=dist_id, Id=items[0]["Id"])
        assert detail["Invalidation"]["InvalidationBatch"]["Paths"]["Items"] == ["/graphql*"]
        assert client.app[RUNTIME].purger.sent == 1


async def test_cloudfront_unknown_distribution_is_logged(aiohttp_client, tmp_path, moto_server, caplog):
    settings = {
        "cache": {
            "cdnIntegration": "aws",
            "aws": {"distribution_id": "ENOSUCH", "endpoint_url": moto_server, "access_key_id": "testing", "secret_access_key": "testing"},
            "cdn": {"batch_window": 0, "backoff": "0.01s"},
        }
    }
    client = await aiohttp_client(make_app(tmp_path, settings))
    runtime = client.app[RUNTIME]
    with caplog.at_level(logging.ERROR, "plugboard.cache.cdn"):
        await runtime.invalidate(["Book"])
        await runtime.purger.flush()
    assert runtime.purger.dropped == 1 and "NoSuchDistribution" in caplog.text


async def test_static_and_signed_file_routes_carry_tags(aiohttp_client, tmp_path):
    from plugboard import keys

    client = await aiohttp_client(make_app(tmp_path))
    resp = await client.get("/_plugboard/graphiql/graphiql-4.1.2.min.css")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert (resp.headers["Cache-Tag"], resp.headers["Surrogate-Key"]) == ("static,static:graphiql", "static static:graphiql")

    files = tmp_path / "var" / "files" / "avatars"
    files.mkdir(parents=True)
    (files / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    app = client.app
    query = app[keys.FILE_SIGNER].query("avatars/1.png", 60)
    base = app[keys.CORE_CONFIG].server.files_path.rstrip("/")
    resp = await client.get(f"{base}/avatars/1.png?{query}")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Tag"] == "file,file:avatars/1.png"
    resp = await client.get(f"{base}/avatars/1.png?expires=1&signature=x")
    assert resp.status == 403 and "Cache-Tag" not in resp.headers
