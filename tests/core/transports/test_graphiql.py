"""GraphiQL served by the core: the page and its headers, the vendored assets, and a real browser."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

import plugboard.transports.graphiql as graphiql_module
from plugboard.app import create_app
from plugboard.settings import Settings
from plugboard.transports.graphiql import ASSET_PREFIX

# What Chromium sends when navigating to a page.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
GQL = "application/graphql-response+json"
STATIC_DIR = Path(graphiql_module.__file__).parent / "static" / "graphiql"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
BROWSER_TIMEOUT = 90


def build_app(tmp_path: Path, graphql: dict[str, Any] | None = None) -> web.Application:
    data: dict[str, Any] = {"plugins": [], "server": {"data_dir": str(tmp_path / "var")}}
    if graphql is not None:
        data["graphql"] = graphql
    return create_app(Settings.from_mapping(data, root=tmp_path))


@pytest.fixture
async def client(tmp_path, aiohttp_client):
    return await aiohttp_client(build_app(tmp_path))


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(' + re.escape(ASSET_PREFIX) + r'[^"]+)"', page)


async def test_browser_gets_the_page(client):
    resp = await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.charset == "utf-8"
    page = await resp.text()
    assert "<title>Plugboard GraphiQL</title>" in page
    assert 'data-endpoint="/graphql"' in page
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"

    csp = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
    nonce = re.search(r"'nonce-([^']+)'", csp["script-src"]).group(1)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == f"'self' 'nonce-{nonce}'"
    assert csp["style-src"] == f"'self' 'nonce-{nonce}'"
    assert csp["connect-src"] == "'self'"
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    # Every inline element carries the nonce; everything else comes from the asset prefix.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == [f'<script nonce="{nonce}">']
    assert re.findall(r"<style[^>]*>", page) == [f'<style nonce="{nonce}">']
    assert "http://" not in page and "https://" not in page

    urls = asset_urls(page)
    names = {url.removeprefix(ASSET_PREFIX) for url in urls}
    assert {Path(n).suffix for n in names} == {".js", ".css"}
    # Only what the page loads is vendored (plus the license notices, and the
    # subscription clients it loads when a realtime transport is served).
    clients = {script for _, _, script in graphiql_module._SUBSCRIPTION_CLIENTS}
    assert 'data-subscriptions="none"' in page and not names & clients
    assert {p.name for p in STATIC_DIR.iterdir()} == names | clients | {"LICENSES.txt"}

    again = await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})
    assert again.headers["Content-Security-Policy"] != resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("accept", ["application/json", GQL, "*/*", "", "text/html;q=0.5, application/json"])
async def test_api_clients_get_a_json_error(client, accept):
    headers = {"Accept": accept} if accept else {}
    resp = await client.get("/graphql", headers=headers)
    assert resp.status == 400
    assert resp.content_type in ("application/json", GQL)
    body = await resp.json(content_type=None)
    assert "query" in body["errors"][0]["message"]


async def test_a_query_in_the_url_is_never_the_page(client):
    resp = await client.get("/graphql", params={"query": "{ __typename }"}, headers={"Accept": BROWSER_ACCEPT})
    assert resp.content_type != "text/html"


async def test_assets_are_served_with_type_and_cache_headers(client):
    page = await (await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})).text()
    urls = asset_urls(page)
    assert len(urls) == 4
    for url in urls:
        name = url.removeprefix(ASSET_PREFIX)
        on_disk = (STATIC_DIR / name).read_bytes()
        for encoding in ("identity", "gzip"):
            resp = await client.get(url, headers={"Accept-Encoding": encoding})
            assert resp.status == 200, url
            assert resp.content_type == CONTENT_TYPES[Path(name).suffix]
            assert resp.charset == "utf-8"
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers.get("Content-Encoding") == ("gzip" if encoding == "gzip" else None)
            assert await resp.read() == on_disk  # the client decompresses
            etag = resp.headers["ETag"]
            assert re.fullmatch(r'"[0-9a-f]{32}(-gz)?"', etag)

            cached = await client.get(url, headers={"Accept-Encoding": encoding, "If-None-Match": etag})
            assert cached.status == 304
            assert cached.headers["ETag"] == etag
            assert await cached.read() == b""


@pytest.mark.parametrize(
    "raw_path",
    [
        "..%2F..%2Fgraphiql.py",
        "..%2Fgraphiql.py",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fgraphiql.py",
        "%252e%252e%252fgraphiql.py",
        "..%5C..%5Cgraphiql.py",
        "%2Fetc%2Fpasswd",
        "%2F" + "%2F".join(str(STATIC_DIR / "graphiql-4.1.2.min.js").lstrip("/").split("/")),
        "LICENSES.txt",  # on disk, but not an asset
        "graphiql.min.js",
        "unknown.js",
        "",
    ],
)
async def test_only_known_assets_are_served(client, raw_path):
    url = URL(str(client.make_url(ASSET_PREFIX)) + raw_path, encoded=True)
    resp = await client.session.get(url)
    assert resp.status == 404


async def test_percent_encoded_known_name_reaches_the_whitelist(client):
    # The positive control for the traversal cases: encoded paths do get to the handler.
    url = URL(str(client.make_url(ASSET_PREFIX)) + "react%2D18.3.1.production.min.js", encoded=True)
    resp = await client.session.get(url)
    assert resp.status == 200


async def test_page_follows_the_configured_path(tmp_path, aiohttp_client):
    client = await aiohttp_client(build_app(tmp_path, {"path": "/api/graphql"}))
    resp = await client.get("/api/graphql", headers={"Accept": BROWSER_ACCEPT})
    assert resp.status == 200
    page = await resp.text()
    assert 'data-endpoint="/api/graphql"' in page
    assert len(asset_urls(page)) == 4


async def test_graphiql_off(tmp_path, aiohttp_client):
    client = await aiohttp_client(build_app(tmp_path, {"graphiql": False}))
    resp = await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})
    assert resp.status == 400
    assert resp.content_type != "text/html"
    assert "<html" not in await resp.text()
    resp = await client.get(ASSET_PREFIX + "react-18.3.1.production.min.js")
    assert resp.status == 404


def chromium_binary() -> str:
    """Chromium, or a failed (not skipped) test: CI installs the ``chromium`` apt package."""
    for candidate in (os.environ.get("PLUGBOARD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.fail("chromium is not installed (apt-get install -y chromium); the GraphiQL browser test needs it")


async def run_chromium(*args: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        chromium_binary(),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group, so a hung browser is killed with every child.
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), BROWSER_TIMEOUT)
    except asyncio.TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT}s")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr.decode(errors="replace")[-4000:]
    return stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def test_graphiql_renders_in_chromium(tmp_path, aiohttp_server):
    app = build_app(tmp_path)
    seen: list[tuple[str, str, int, str]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path, response.status, request.headers.get("Content-Type", "")))

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")

    stdout, stderr = await run_chromium(
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Console messages (CSP violations among them) go to stderr.
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        str(server.make_url("/graphql")),
    )

    # React rendered GraphiQL into the mount point (the server only sent an empty div).
    assert re.search(r'class="[^"]*\bgraphiql-container\b', stdout), stdout[:2000]
    assert "Loading GraphiQL" not in stdout  # the placeholder React replaces
    assert "Content Security Policy" not in stderr, [line for line in stderr.splitlines() if "CONSOLE" in line]
    # The page, every asset, and GraphiQL's introspection POSTed as JSON to the endpoint.
    assert ("GET", "/graphql", 200, "") in seen
    assert {path for method, path, status, _ in seen if path.startswith(ASSET_PREFIX) and status == 200} == {
        ASSET_PREFIX + p.name
        for p in STATIC_DIR.iterdir()
        if p.suffix in (".js", ".css") and p.name not in {script for _, _, script in graphiql_module._SUBSCRIPTION_CLIENTS}
    }
    assert ("POST", "/graphql", 200, "application/json") in seen
