"""Issue 10 (4): GraphiQL runs subscriptions, shows the schema docs, in headless Chromium.

Playwright drives the system Chromium (never downloads one), as
tests/core/test_cors_browser.py does. A subscription typed into GraphiQL's
editor and run shows its values as they stream: over graphql-ws when the
realtime plugin serves WebSockets, over graphql-sse when it serves only SSE.
The page keeps its strict CSP: a violation fails the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from core_testkit import make_plugin

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000
TICKS = 4
TICK = 0.4


def chromium_binary() -> str:
    for candidate in (os.environ.get("PLUGBOARD_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.fail("chromium is not installed (apt-get install -y chromium); the GraphiQL browser test needs it")


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_binary(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def ticker_plugin():
    async def ticks(parent, args, context, info):
        for n in range(1, args["count"] + 1):
            yield {"ticks": n}
            await asyncio.sleep(TICK)

    async def hello(parent, args, context, info):
        return "hello"

    return make_plugin(
        "ticker",
        plugboard_schema=lambda: '''
            extend type Query { "Says hello." hello: String }
            extend type Subscription { "Counts up, one value every 0.4 s." ticks(count: Int!): Int }
        ''',
        plugboard_resolvers=lambda: {"Query.hello": hello},
        plugboard_subscriptions=lambda: {"Subscription.ticks": ticks},
    )


# GraphiQL 4's editors are CodeMirror 5 instances on their wrapper elements.
SET_QUERY = "(q) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(q)"
RESPONSE = "() => { const cm = document.querySelector('.graphiql-response .CodeMirror'); return cm ? cm.CodeMirror.getValue() : ''; }"


async def open_graphiql(browser, url):
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(url, wait_until="load")
    await page.wait_for_selector(".graphiql-query-editor .CodeMirror")
    return context, page, problems


async def run_and_watch(page, query: str, until: str) -> list[str]:
    """Run ``query`` from the editor; every distinct response text GraphiQL shows until one holds ``until``."""
    await page.evaluate(SET_QUERY, query)
    # GraphiQL parses the editor's text after a short debounce, and its
    # fetcher picks the WebSocket by that parsed document: as a person typing
    # would, give it the moment before running.
    await asyncio.sleep(0.8)
    await page.click(".graphiql-execute-button")
    shown: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TICKS * TICK + 15
    while loop.time() < deadline:
        text = await page.evaluate(RESPONSE)
        if text and (not shown or shown[-1] != text):
            shown.append(text)
        if until in text:
            break
        await asyncio.sleep(0.05)
    return shown


@pytest.mark.parametrize(
    "realtime, client",
    [({}, "ws"), ({"websockets": False}, "sse")],
    ids=["graphql-ws", "graphql-sse"],
)
async def test_a_subscription_started_from_graphiql_streams_its_values(make_app, aiohttp_server, browser, realtime, client):
    app = make_app({"plugins": ["realtime"], "realtime": realtime}, plugins=[ticker_plugin()])
    requests: list[tuple[str, str]] = []

    async def record(request, response) -> None:
        requests.append((request.method, request.headers.get("Accept", "")))

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")
    context, page, problems = await open_graphiql(browser, f"http://127.0.0.1:{server.port}/graphql")
    try:
        assert await page.get_attribute("#graphiql", "data-subscriptions") == client
        shown = await asyncio.wait_for(run_and_watch(page, f"subscription {{ ticks(count: {TICKS}) }}", f'"ticks": {TICKS}'), 60)
        values = [n for n in range(1, TICKS + 1) if any(f'"ticks": {n}' in text for text in shown)]
        # Streamed: GraphiQL showed several values one after another, ending at the last.
        assert len(values) >= 2 and values[-1] == TICKS, shown
        # A query still goes over HTTP, once the stream has ended.
        await page.wait_for_selector('.graphiql-execute-button[aria-label^="Execute"]')
        shown = await asyncio.wait_for(run_and_watch(page, "{ hello }", '"hello": "hello"'), 30)
        assert any('"hello": "hello"' in text for text in shown), shown
    finally:
        await context.close()
    assert not [p for p in problems if "Content Security Policy" in p], problems
    if client == "sse":
        assert any(accept.startswith("text/event-stream") for method, accept in requests if method == "POST"), requests


async def test_graphiql_shows_the_schema_docs(make_app, aiohttp_server, browser):
    app = make_app({"plugins": ["realtime"]}, plugins=[ticker_plugin()])
    server = await aiohttp_server(app, host="127.0.0.1")
    context, page, problems = await open_graphiql(browser, f"http://127.0.0.1:{server.port}/graphql")
    try:
        # The docs need the schema: GraphiQL 4 introspects with
        # inputValueDeprecation, which failed before issue 10 (1).
        await page.click('[aria-label="Show Documentation Explorer"]')
        explorer = page.locator(".graphiql-doc-explorer")
        await explorer.get_by_text("Root Types").wait_for()
        await explorer.locator("a", has_text="Subscription").first.click()
        await explorer.get_by_text("ticks").first.wait_for()
        await explorer.get_by_text("Counts up, one value every 0.4 s.").first.wait_for()
    finally:
        await context.close()
    assert not [p for p in problems if "introspection" in p.lower() or "Content Security Policy" in p], problems
