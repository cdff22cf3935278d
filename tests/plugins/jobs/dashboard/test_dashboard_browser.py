"""The dashboard in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

A real server (jobs on the memory broker, realtime's memory pubsub) with tasks
the test controls. The browser logs in through the form, watches a job go
PENDING -> PROCESSING -> COMPLETED without reloading, opens a FAILED job, sees
its error and attempts, and clicks Retry. Chromium missing is a failure, not a
skip: CI installs it (apt-get install -y chromium). Playwright never downloads
a browser here: it is pointed at the system binary.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil

import pytest
from dashboard_testkit import TOKEN, make_app

from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Generous: CI machines are slow; each wait ends as soon as the page shows the state.
TIMEOUT_MS = 15_000


def chromium_binary() -> str:
    for candidate in (os.environ.get("PLUGBOARD_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.fail("chromium is not installed (apt-get install -y chromium); the dashboard browser test needs it")


@pytest.fixture
async def browser(tmp_path):
    from playwright.async_api import async_playwright

    # The system binary: Playwright never fetches a browser of its own here.
    executable = chromium_binary()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_dashboard_in_chromium(tmp_path, tasks, aiohttp_server, browser):
    # One job at a time, so a second job waits PENDING while the first runs.
    app = make_app(tmp_path, plugins=[tasks], jobs={"concurrency": 1})
    seen: list[tuple[str, str, int]] = []

    async def record(request, response) -> None:
        seen.append((request.method, request.path, response.status))

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")
    jobs = app[JOBS]

    failed = await jobs.enqueue("broken", {"reason": "disk full"})
    assert (await jobs.wait(failed.id)).status == JobStatus.FAILED

    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # -- log in through the form ----------------------------------------------------
    response = await page.goto(str(server.make_url("/jobs")))
    assert response.status == 401
    await page.fill("#token", "wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=Wrong token.")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#live.on")
    # The login page's own 401 answers were logged; from here on nothing may be.
    assert all("status of 401" in p for p in problems), problems
    problems.clear()
    cookies = await context.cookies()
    session = next(c for c in cookies if c["name"] == "plugboard_jobs_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/jobs"
    assert TOKEN not in session["value"]

    failed_row = page.locator(f'#jobs tr[data-id="{failed.id}"]')
    await failed_row.locator(".status", has_text="FAILED").wait_for()
    await page.locator("#count-FAILED .n", has_text="1").wait_for()
    # Survives only as long as this document does (a reload would drop it).
    await page.evaluate("window.stillTheSamePage = true")
    page_loads = seen.count(("GET", "/jobs", 200))

    # -- a job goes PENDING -> PROCESSING -> COMPLETED, live -------------------------
    blocker = await jobs.enqueue("gated", {"label": "blocker"})
    await asyncio.wait_for(tasks.started_event("blocker").wait(), 5)
    watched = await jobs.enqueue("gated", {"label": "watched"})
    row = page.locator(f'#jobs tr[data-id="{watched.id}"]')
    await row.locator(".status", has_text="PENDING").wait_for()
    await page.locator("#count-PENDING .n", has_text="1").wait_for()
    await page.locator(f'#jobs tr[data-id="{blocker.id}"] .status', has_text="PROCESSING").wait_for()

    await row.click()  # the detail panel follows the job too
    await page.locator("#detail-status", has_text="PENDING").wait_for()
    assert await page.locator("#cancel").is_visible()
    assert not await page.locator("#retry").is_visible()

    tasks.release("blocker")
    await row.locator(".status", has_text="PROCESSING").wait_for()
    await page.locator("#detail-status", has_text="PROCESSING").wait_for()
    await page.locator("#detail-percent", has_text="10%").wait_for()
    assert await page.locator("#detail-progress").get_attribute("value") == "10"

    tasks.release("watched")
    await row.locator(".status", has_text="COMPLETED").wait_for()
    await page.locator("#detail-status", has_text="COMPLETED").wait_for()
    await page.locator("#detail-result", has_text='"label": "watched"').wait_for()
    await page.locator("#count-COMPLETED .n", has_text="2").wait_for()
    await page.locator("#count-PENDING .n", has_text="0").wait_for()
    assert not await page.locator("#cancel").is_visible()

    # -- open the FAILED job, see its error and attempts, retry it ----------------------
    await failed_row.click()
    await page.locator("#detail-status", has_text="FAILED").wait_for()
    assert await page.locator("#detail-error").text_content() == "RuntimeError: disk full (attempt 2)"
    assert await page.locator("#detail-attempts").text_content() == "2 / 2"
    assert await page.locator("#detail-args").text_content() == '{\n  "reason": "disk full"\n}'
    await page.click("#retry")
    # It runs again (two more attempts) and fails again: the page follows every step.
    await page.locator("#detail-attempts", has_text="4 / 4").wait_for()
    await page.locator("#detail-status", has_text="FAILED").wait_for()
    assert await page.locator("#detail-error").text_content() == "RuntimeError: disk full (attempt 4)"
    await failed_row.locator(".attempts", has_text="4 / 4").wait_for()
    assert ("POST", f"/jobs/api/jobs/{failed.id}/retry", 200) in seen
    assert (await jobs.get(failed.id)).attempts == 4

    # -- filters -------------------------------------------------------------------------
    await page.select_option("#filter-status", "FAILED")
    await row.wait_for(state="detached")
    await page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 1")
    await page.click("#count-FAILED")  # toggles the filter off again
    await row.wait_for()

    # Nothing reloaded the page, and it ran clean under its CSP.
    assert await page.evaluate("window.stillTheSamePage") is True
    assert seen.count(("GET", "/jobs", 200)) == page_loads
    assert problems == []
    assert any(path == "/jobs/api/events" and status == 200 for _, path, status in seen)
    await context.close()


async def test_dashboard_polls_without_live_updates(tmp_path, tasks, aiohttp_server, browser):
    # The event stream is unavailable (as behind a proxy that buffers SSE, or
    # during a pubsub outage): it answers 503 and the page polls instead.
    app = make_app(tmp_path, plugins=[tasks], realtime=False)
    server = await aiohttp_server(app, host="127.0.0.1")
    jobs = app[JOBS]
    context = await browser.new_context()
    page = await context.new_page()
    unavailable = {"error": {"code": "UNAVAILABLE", "message": "no live updates"}}
    await page.route("**/jobs/api/events", lambda route: route.fulfill(status=503, json=unavailable))
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(str(server.make_url("/jobs")))
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.locator("#live", has_text="polling").wait_for()
    await page.locator("#empty").wait_for()

    job = await jobs.enqueue("quick", {"value": 7})
    await page.locator(f'#jobs tr[data-id="{job.id}"] .status', has_text="COMPLETED").wait_for()
    await page.locator("#count-COMPLETED .n", has_text="1").wait_for()
    assert await page.locator("#empty").is_hidden()
    await context.close()


async def test_load_more_and_type_filter(tmp_path, tasks, aiohttp_server, browser):
    app = make_app(tmp_path, plugins=[tasks])
    server = await aiohttp_server(app, host="127.0.0.1")
    jobs = app[JOBS]
    quick = [await jobs.enqueue("quick", {"value": i}) for i in range(23)]
    broken = await jobs.enqueue("broken")
    for job in (*quick, broken):
        await jobs.wait(job.id)

    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(str(server.make_url("/jobs")))
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    rows = page.locator("#jobs tbody tr")
    await page.locator("#total", has_text="24 jobs").wait_for()
    # The counts and the first page arrive by separate requests.
    await rows.nth(19).wait_for()
    assert await rows.count() == 20
    await page.click("#more")
    await page.locator("#more").wait_for(state="hidden")
    await rows.nth(23).wait_for()
    assert await rows.count() == 24
    ids = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [broken.id, *reversed([j.id for j in quick])]

    await page.select_option("#filter-type", "broken")
    await page.locator("#total", has_text=re.compile(r"^1 job$")).wait_for()
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == [broken.id]
    await page.close()
