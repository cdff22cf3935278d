"""The dashboard over HTTP: access (token, session cookie, role, CSRF), the page's
headers, the JSON API, the SSE stream and the static files, on a real app with
the jobs plugin (memory broker) and realtime (memory pubsub)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from http.cookies import SimpleCookie

import pytest
from dashboard_testkit import TOKEN, RoleAuth
from yarl import URL

from plugboard import keys
from plugboard.plugins.jobs.dashboard import access
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.testing import EventStream, eventually

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def login(client, token: str = TOKEN) -> str:
    """Logs the client's cookie jar in; returns the page's CSRF value."""
    resp = await client.post("/jobs/login", data={"token": token}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    page = await (await client.get("/jobs")).text()
    return re.search(r'data-csrf="([^"]+)"', page).group(1)


def csp_of(resp) -> dict[str, str]:
    return dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))


# -- access -------------------------------------------------------------------------


async def test_off_by_default(app_factory, aiohttp_client):
    client = await aiohttp_client(app_factory(jobs={"dashboard": False}))
    assert (await client.get("/jobs")).status == 404
    assert (await client.get("/jobs/api/summary")).status == 404


async def test_login_form_when_not_logged_in(client):
    resp = await client.get("/jobs", headers={"Accept": BROWSER_ACCEPT})
    assert resp.status == 401
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<form method="post" action="/jobs/login"' in page
    assert 'name="token" type="password"' in page
    assert "data-csrf" not in page

    api = await client.get("/jobs/api/summary")
    assert api.status == 401
    assert api.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.json())["error"]["code"] == "UNAUTHENTICATED"
    assert (await client.get("/jobs/api/summary", headers={"Authorization": "Bearer wrong"})).status == 401


async def test_locked_without_token_or_role(app_factory, aiohttp_client):
    client = await aiohttp_client(app_factory(token=None))
    resp = await client.get("/jobs")
    assert resp.status == 403
    page = await resp.text()
    assert "server.admin_token" in page and "<form" not in page
    api = await client.get("/jobs/api/jobs", headers={"Authorization": "Bearer anything"})
    assert api.status == 403
    assert (await api.json())["error"]["code"] == "FORBIDDEN"
    login_resp = await client.post("/jobs/login", data={"token": "anything"}, allow_redirects=False)
    assert login_resp.status == 403
    assert access.SESSION_COOKIE not in login_resp.cookies


async def test_page_headers_and_strict_csp(client):
    await login(client)
    resp = await client.get("/jobs")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    csp = csp_of(resp)
    nonce = re.search(r"'nonce-([^']+)'", csp["script-src"]).group(1)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == f"'nonce-{nonce}'"
    assert csp["style-src"] == f"'nonce-{nonce}'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    # One script and one stylesheet, both from the plugin, both with the nonce; nothing inline.
    assert re.findall(r"<script[^>]*>", page) == [f'<script nonce="{nonce}" src="/jobs/static/dashboard.js" defer>']
    assert re.findall(r"<link rel=\"stylesheet\"[^>]*>", page) == [f'<link rel="stylesheet" nonce="{nonce}" href="/jobs/static/dashboard.css">']
    assert "<style" not in page and "style=" not in page
    assert "http://" not in page and "https://" not in page
    again = await client.get("/jobs")
    assert csp_of(again)["script-src"] != csp["script-src"]


async def test_login_sets_a_signed_session_cookie(client):
    wrong = await client.post("/jobs/login", data={"token": "nope"}, allow_redirects=False)
    assert wrong.status == 401
    assert "Wrong token" in await wrong.text()
    assert access.SESSION_COOKIE not in wrong.cookies

    resp = await client.post("/jobs/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/jobs"
    header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(access.SESSION_COOKIE + "="))
    morsel = SimpleCookie(header)[access.SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/jobs"
    assert int(morsel["max-age"]) == access.SESSION_MAX_AGE
    assert TOKEN not in header
    assert re.fullmatch(r"\d+\.[\w-]+\.[\w-]{43}", morsel.value)

    page = await client.get("/jobs")
    assert page.status == 200
    assert 'data-csrf="' in await page.text()
    assert (await client.get("/jobs/api/summary")).status == 200


async def test_cookie_is_scoped_to_the_dashboard_path(client):
    await login(client)
    jar = client.session.cookie_jar
    assert jar.filter_cookies(client.make_url("/jobs/api/summary")).get(access.SESSION_COOKIE)
    assert not jar.filter_cookies(client.make_url("/graphql")).get(access.SESSION_COOKIE)


async def test_tampered_expired_and_rotated_sessions_are_refused(client, app_factory, aiohttp_client):
    app = client.server.app
    value = access.new_session(app)
    issued, nonce, signature = value.split(".")
    url = client.make_url("/jobs/api/summary")

    async def status_with(cookie: str) -> int:
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({access.SESSION_COOKIE: cookie}, URL(str(url)))
        return (await client.get("/jobs/api/summary")).status

    assert await status_with(value) == 200
    assert await status_with(f"{issued}.{nonce}.{signature[:-2]}AA") == 401
    assert await status_with(f"{int(issued) + 10}.{nonce}.{signature}") == 401
    assert await status_with(f"{issued}.other{nonce}.{signature}") == 401
    assert await status_with(TOKEN) == 401
    assert await status_with("") == 401
    assert await status_with(access.new_session(app, now=time.time() - access.SESSION_MAX_AGE - 1)) == 401
    # Signed with another token (the token was changed): no longer valid.
    other = app_factory(token="another-token-entirely-different")
    assert await status_with(access.new_session(other)) == 401


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}],
)
async def test_cross_site_login_is_refused(client, headers):
    resp = await client.post("/jobs/login", data={"token": TOKEN}, headers=headers, allow_redirects=False)
    assert resp.status == 403
    assert access.SESSION_COOKIE not in resp.cookies


async def test_same_origin_login(client):
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "http://ignored.example"}, {}):
        resp = await client.post("/jobs/login", data={"token": TOKEN}, headers=headers, allow_redirects=False)
        assert resp.status == 303
    same = await client.post("/jobs/login", data={"token": TOKEN}, headers={"Origin": str(client.make_url("")).rstrip("/")}, allow_redirects=False)
    assert same.status == 303


async def test_state_changes_need_the_csrf_header_with_a_session(client, admin):
    jobs = client.server.app[JOBS]
    job = await jobs.enqueue("broken")
    await jobs.wait(job.id)
    csrf = await login(client)
    url = f"/jobs/api/jobs/{job.id}/retry"

    refused = await client.post(url)
    assert refused.status == 403
    assert "X-Plugboard-CSRF" in (await refused.json())["error"]["message"]
    assert (await client.post(url, headers={"X-Plugboard-CSRF": csrf + "x"})).status == 403
    assert (await jobs.get(job.id)).status == JobStatus.FAILED

    ok = await client.post(url, headers={"X-Plugboard-CSRF": csrf})
    assert ok.status == 200
    assert (await ok.json())["status"] in ("PENDING", "PROCESSING", "RETRYING", "FAILED")
    await jobs.wait(job.id)
    # A bearer client needs no CSRF header.
    client.session.cookie_jar.clear()
    assert (await client.post(url, headers=admin)).status == 200


async def test_logout_clears_the_session(client):
    csrf = await login(client)
    assert (await client.post("/jobs/logout")).status == 403
    resp = await client.post("/jobs/logout", headers={"X-Plugboard-CSRF": csrf})
    assert resp.status == 204
    assert (await client.get("/jobs/api/summary")).status == 401


async def test_admin_role_from_an_auth_plugin(app_factory, aiohttp_client):
    client = await aiohttp_client(app_factory(token=None, extra=(RoleAuth(),)))
    alice = await client.get("/jobs", headers={"Authorization": "Bearer alice"})
    assert alice.status == 403
    assert "for admins only" in await alice.text()
    api = await client.get("/jobs/api/summary", headers={"Authorization": "Bearer alice"})
    assert api.status == 403 and "admins only" in (await api.json())["error"]["message"]
    assert (await client.get("/jobs", headers={"Authorization": "Bearer bad"})).status == 403
    assert "server.admin_token" in await (await client.get("/jobs")).text()
    resp = await client.get("/jobs", headers={"Authorization": "Bearer root"})
    assert resp.status == 200
    csrf = re.search(r'data-csrf="([^"]+)"', await resp.text()).group(1)
    morsel = SimpleCookie(resp.headers["Set-Cookie"])[access.CSRF_COOKIE]
    assert morsel.value == csrf and morsel["httponly"] is True and morsel["samesite"] == "Strict"
    # The role's value stays the same while the cookie does.
    again = await client.get("/jobs", headers={"Authorization": "Bearer root"})
    assert f'data-csrf="{csrf}"' in await again.text()

    jobs = client.server.app[JOBS]
    job = await jobs.enqueue("broken")
    await jobs.wait(job.id)
    url = f"/jobs/api/jobs/{job.id}/retry"
    assert (await client.post(url, headers={"Authorization": "Bearer root"})).status == 403
    assert (await client.post(url, headers={"Authorization": "Bearer root", "X-Plugboard-CSRF": "forged-value-of-some-length"})).status == 403
    assert (await client.post(url, headers={"Authorization": "Bearer alice", "X-Plugboard-CSRF": csrf})).status == 403
    assert (await client.post(url, headers={"Authorization": "Bearer root", "X-Plugboard-CSRF": csrf})).status == 200


# -- the JSON API --------------------------------------------------------------------


async def test_summary_list_filters_and_pages(client, admin):
    jobs = client.server.app[JOBS]
    done = [await jobs.enqueue("quick", {"value": i}) for i in range(5)]
    failed = await jobs.enqueue("broken")
    for job in (*done, failed):
        await jobs.wait(job.id)

    summary = await (await client.get("/jobs/api/summary", headers=admin)).json()
    assert summary["counts"] == {"PENDING": 0, "PROCESSING": 0, "COMPLETED": 5, "FAILED": 1, "RETRYING": 0, "CANCELLED": 0}
    assert summary["total"] == 6
    assert summary["types"] == sorted(summary["types"])
    assert {"broken", "gated", "quick"} <= set(summary["types"])

    everything = await (await client.get("/jobs/api/jobs", headers=admin)).json()
    assert [j["id"] for j in everything["jobs"]] == [failed.id, *reversed([j.id for j in done])]
    assert everything["totalCount"] == 6 and everything["hasNextPage"] is False

    only_failed = await (await client.get("/jobs/api/jobs", params={"status": "FAILED"}, headers=admin)).json()
    assert [j["id"] for j in only_failed["jobs"]] == [failed.id]
    only_quick = await (await client.get("/jobs/api/jobs", params={"type": "quick", "status": "COMPLETED"}, headers=admin)).json()
    assert only_quick["totalCount"] == 5
    none = await (await client.get("/jobs/api/jobs", params={"type": "unknown-type"}, headers=admin)).json()
    assert none == {"jobs": [], "endCursor": None, "hasNextPage": False, "totalCount": 0}

    seen, after = [], None
    while True:
        params = {"type": "quick", "first": "2", **({"after": after} if after else {})}
        page = await (await client.get("/jobs/api/jobs", params=params, headers=admin)).json()
        seen += [j["id"] for j in page["jobs"]]
        assert len(page["jobs"]) <= 2
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
    assert seen == list(reversed([j.id for j in done]))


@pytest.mark.parametrize(
    "params",
    [{"status": "DONE"}, {"status": "pending"}, {"first": "0"}, {"first": "101"}, {"first": "ten"}, {"first": "-1"}],
)
async def test_bad_filters_are_400(client, admin, params):
    resp = await client.get("/jobs/api/jobs", params=params, headers=admin)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "BAD_REQUEST" and body["error"]["message"]


async def test_job_detail(client, admin):
    jobs = client.server.app[JOBS]
    job = await jobs.enqueue("broken", {"reason": "disk full"})
    await jobs.wait(job.id)
    detail = await (await client.get(f"/jobs/api/jobs/{job.id}", headers=admin)).json()
    assert detail["id"] == job.id
    assert detail["type"] == "broken"
    assert detail["status"] == "FAILED"
    assert detail["args"] == {"reason": "disk full"}
    assert detail["attempts"] == 2 and detail["maxAttempts"] == 2
    assert detail["error"] == "RuntimeError: disk full (attempt 2)"
    assert detail["result"] is None
    assert detail["createdAt"].endswith("+00:00") and detail["completedAt"] >= detail["startedAt"] >= detail["createdAt"]

    missing = await client.get("/jobs/api/jobs/no-such-job", headers=admin)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "NOT_FOUND"


async def test_retry_and_cancel(client, admin, tasks):
    jobs = client.server.app[JOBS]
    running = await jobs.enqueue("gated", {"label": "a"})
    await asyncio.wait_for(tasks.started_event("a").wait(), 5)

    # Retrying a job that has not failed is a conflict.
    conflict = await client.post(f"/jobs/api/jobs/{running.id}/retry", headers=admin)
    assert conflict.status == 409
    assert (await conflict.json())["error"]["code"] == "CONFLICT"

    cancelled = await client.post(f"/jobs/api/jobs/{running.id}/cancel", headers=admin)
    assert cancelled.status == 200
    assert (await cancelled.json())["status"] == "CANCELLED"
    again = await client.post(f"/jobs/api/jobs/{running.id}/cancel", headers=admin)
    assert again.status == 409

    tasks.release("a")
    retried = await client.post(f"/jobs/api/jobs/{running.id}/retry", headers=admin)
    assert retried.status == 200
    assert (await retried.json())["status"] in ("PENDING", "PROCESSING", "COMPLETED")
    finished = await jobs.wait(running.id)
    assert finished.status == JobStatus.COMPLETED

    assert (await client.post("/jobs/api/jobs/nope/retry", headers=admin)).status == 404
    assert (await client.post("/jobs/api/jobs/nope/cancel", headers=admin)).status == 404
    assert (await client.get(f"/jobs/api/jobs/{running.id}/retry", headers=admin)).status == 405


# -- the event stream ---------------------------------------------------------------


async def read_events(resp, until, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """Reads SSE events until ``until(events)`` is true."""
    stream, events = EventStream(resp), []
    async with asyncio.timeout(timeout):
        while not until(events):
            name, data = await stream.event(timeout=None)
            events.append((name, json.loads(data)))
    return events


async def test_events_stream_every_change_and_clean_up(client, admin, tasks):
    app = client.server.app
    jobs = app[JOBS]
    resp = await client.get("/jobs/api/events", headers=admin)
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await read_events(resp, lambda e: e) == [("ready", {})]

    job = await jobs.enqueue("gated", {"label": "live"})
    await asyncio.wait_for(tasks.started_event("live").wait(), 5)
    tasks.release("live")
    events = await read_events(resp, lambda e: e and e[-1][1]["status"] == "COMPLETED")
    assert {name for name, _ in events} == {"job"}
    assert all(data["id"] == job.id for _, data in events)
    statuses = [data["status"] for _, data in events]
    assert statuses[0] == "PENDING" and statuses[-1] == "COMPLETED" and "PROCESSING" in statuses
    assert [data["progress"] for _, data in events if data["status"] == "PROCESSING"][-1] == 60
    assert events[-1][1]["result"] == {"label": "live", "attempt": 1}

    pubsub = app[keys.PUBSUB]
    assert pubsub.subscriber_counts().get("jobs") == 1
    resp.close()
    # The server notices the disconnect and drops the subscription.
    await eventually(lambda: pubsub.subscriber_counts().get("jobs", 0) == 0)


async def test_events_need_access(client):
    assert (await client.get("/jobs/api/events")).status == 401


async def test_events_work_without_the_realtime_plugin(app_factory, aiohttp_client, admin):
    # The pubsub is the core's: jobs publish their changes whether or not realtime is on.
    app = app_factory(realtime=False)
    client = await aiohttp_client(app)
    resp = await client.get("/jobs/api/events", headers=admin)
    assert resp.status == 200
    await read_events(resp, lambda events: any(name == "ready" for name, _ in events))
    job = await app[JOBS].enqueue("quick", {"value": 1})
    events = await read_events(resp, lambda events: any(name == "job" and data["id"] == job.id for name, data in events))
    assert any(name == "job" for name, _ in events)
    resp.close()


async def test_shutdown_ends_open_streams(app_factory, aiohttp_server, aiohttp_client, admin):
    server = await aiohttp_server(app_factory(server={"shutdown_grace": "30s"}))
    client = await aiohttp_client(server)
    resp = await client.get("/jobs/api/events", headers=admin)
    await read_events(resp, lambda e: e)
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 5


# -- static files and paths -------------------------------------------------------------


async def test_static_files(client):
    for name, content_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        resp = await client.get(f"/jobs/static/{name}")
        assert resp.status == 200
        assert resp.content_type == content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
        cached = await client.get(f"/jobs/static/{name}", headers={"If-None-Match": etag})
        assert cached.status == 304
    for raw in ("..%2F__init__.py", "%2e%2e%2faccess.py", "access.py", "page.py", "DASHBOARD.JS", ""):
        url = URL(str(client.make_url("/jobs/static/")) + raw, encoded=True)
        assert (await client.session.get(url)).status == 404, raw


async def test_configured_path(app_factory, aiohttp_client, admin):
    client = await aiohttp_client(app_factory(jobs={"dashboard_path": "/ops/queue/"}))
    assert (await client.get("/jobs")).status == 404
    resp = await client.post("/ops/queue/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ops/queue"
    assert SimpleCookie(resp.headers["Set-Cookie"])[access.SESSION_COOKIE]["path"] == "/ops/queue"
    page = await (await client.get("/ops/queue")).text()
    assert 'data-base="/ops/queue"' in page and 'src="/ops/queue/static/dashboard.js"' in page
    assert (await client.get("/ops/queue/api/summary", headers=admin)).status == 200
    slash = await client.get("/ops/queue/", allow_redirects=False)
    assert slash.status == 308 and slash.headers["Location"] == "/ops/queue"



async def test_role_and_token_together(app_factory, aiohttp_client, admin):
    client = await aiohttp_client(app_factory(extra=(RoleAuth(),)))
    assert (await client.get("/jobs", headers={"Authorization": "Bearer root"})).status == 200
    # Not an admin, but the token would let an admin in: the login form.
    alice = await client.get("/jobs", headers={"Authorization": "Bearer alice"})
    assert alice.status == 401 and "<form" in await alice.text()
    assert (await client.get("/jobs/api/summary", headers=admin)).status == 200
