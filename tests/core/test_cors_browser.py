"""CORS as a browser enforces it: headless Chromium (Debian's ``chromium``), driven by Playwright.

Two loopback servers on different ports, so two origins: a tiny page server
(the "web app") and the Plugboard server (the API). From the page, through
``fetch``, ``EventSource`` and ``WebSocket``, the test runs a JSON query, a
multipart upload with Apollo's preflight header, an SSE subscription and a
graphql-transport-ws handshake. With the page's origin in
``server.cors.origins`` every one works; with it absent Chromium blocks each
one (and, where the request needs a preflight, never sends it). Chromium
missing is a failure, not a skip; Playwright is pointed at the system binary
and never downloads a browser.
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from aiohttp import web

from core_testkit import echo_plugin, make_plugin

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000

PAGE = "<!doctype html><html><head><meta charset=utf-8><title>web app</title></head><body>another origin</body></html>"

# Runs in the page; returns what the page's script could see of each call.
SCRIPT = r"""
async (api) => {
  const out = {};
  try {
    const r = await fetch(api + "/graphql", {
      method: "POST",
      headers: {"content-type": "application/json", "accept": "application/graphql-response+json"},
      body: JSON.stringify({query: "{ hello(name: \"browser\") }"}),
    });
    out.query = {status: r.status, body: await r.json(), requestId: r.headers.get("x-request-id")};
  } catch (e) { out.query = "blocked: " + e.message; }

  try {
    const form = new FormData();
    form.append("operations", JSON.stringify({query: "mutation($f: Upload!) { upload(file: $f) { filename size text } }", variables: {f: null}}));
    form.append("map", JSON.stringify({"0": ["variables.f"]}));
    form.append("0", new Blob(["hello from the browser"], {type: "text/plain"}), "note.txt");
    const r = await fetch(api + "/graphql", {method: "POST", headers: {"apollo-require-preflight": "true"}, body: form});
    out.upload = {status: r.status, body: await r.json()};
  } catch (e) { out.upload = "blocked: " + e.message; }

  out.sse = await new Promise((resolve) => {
    const got = [];
    const source = new EventSource(api + "/graphql?query=" + encodeURIComponent("subscription { countdown(from: 3) }"));
    source.addEventListener("next", (e) => got.push(JSON.parse(e.data)));
    source.addEventListener("complete", () => { source.close(); resolve(got); });
    source.onerror = () => { source.close(); resolve("blocked"); };
  });

  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(api.replace("http", "ws") + "/graphql", "graphql-transport-ws");
    ws.onopen = () => ws.send(JSON.stringify({type: "connection_init"}));
    ws.onmessage = (e) => { ws.close(); resolve(JSON.parse(e.data).type); };
    ws.onerror = () => resolve("blocked");
  });
  return out;
}
"""


def chromium_binary() -> str:
    for candidate in (os.environ.get("PLUGBOARD_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.fail("chromium is not installed (apt-get install -y chromium); the CORS browser test needs it")


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_binary(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def countdown_plugin():
    async def countdown(parent, args, context, info):
        for n in range(args["from"], 0, -1):
            yield {"countdown": n}
            await asyncio.sleep(0.01)

    return make_plugin(
        "countdown",
        plugboard_schema=lambda: "extend type Subscription { countdown(from: Int!): Int }",
        plugboard_subscriptions=lambda: {"Subscription.countdown": countdown},
    )


@pytest.fixture
async def page_server(aiohttp_server):
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    return await aiohttp_server(app, host="127.0.0.1")


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
async def test_cross_origin_page(make_app, aiohttp_server, page_server, browser, listed):
    page_origin = f"http://127.0.0.1:{page_server.port}"
    # Not listed: a pattern that looks close (another host) but does not cover the page.
    origins = [page_origin] if listed else ["http://localhost:*", "https://127.0.0.1:*"]
    app = make_app({"plugins": ["realtime"], "server": {"cors": {"origins": origins}}}, plugins=[echo_plugin(), countdown_plugin()])
    seen: list[tuple[str, str, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.headers.get("Content-Type", "").split(";")[0], response.status))

    app.on_response_prepare.append(record)
    api = await aiohttp_server(app, host="127.0.0.1")
    api_origin = f"http://127.0.0.1:{api.port}"
    assert api_origin != page_origin

    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(page_origin + "/")
    out = await asyncio.wait_for(page.evaluate(SCRIPT, api_origin), 30)
    await context.close()

    if listed:
        assert out["query"]["status"] == 200
        assert out["query"]["body"] == {"data": {"hello": "hello browser"}}
        assert out["query"]["requestId"]  # an exposed header
        assert out["upload"] == {"status": 200, "body": {"data": {"upload": {"filename": "note.txt", "size": 22, "text": "hello from the browser"}}}}
        assert out["sse"] == [{"data": {"countdown": 3}}, {"data": {"countdown": 2}}, {"data": {"countdown": 1}}]
        assert out["ws"] == "connection_ack"
        # Both POSTs needed a preflight, and each was granted.
        assert seen.count(("OPTIONS", "", 204)) == 2
        assert ("POST", "multipart/form-data", 200) in seen
    else:
        assert out["query"].startswith("blocked")
        assert out["upload"].startswith("blocked")
        assert out["sse"] == "blocked"
        assert out["ws"] == "blocked"
        # The preflights were refused, so neither POST was ever sent.
        assert seen.count(("OPTIONS", "", 403)) == 2
        assert not any(method == "POST" for method, _, _ in seen)
        # The WebSocket handshake was refused before the upgrade.
        assert ("GET", "", 403) in seen
