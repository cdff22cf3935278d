"""The dashboard's request handlers: the page, login/logout, the JSON API and the SSE stream.

Everything goes through the jobs API (``app[JOBS]``). Errors are JSON
``{"error": {"code": ..., "message": ...}}`` with the matching status: 400 bad
filter, 401 not logged in, 403 locked / not an admin / bad CSRF header, 404
unknown job, 409 state conflict, 429 too many wrong tokens from this address
(with ``Retry-After``), 503 jobs not running or no pubsub for live updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Awaitable, Callable

import attrs
from aiohttp import web
from aiohttp_sse import sse_response

from plugboard import keys
from plugboard.graphql.context import bearer
from plugboard.plugins.jobs.dashboard import access
from plugboard.plugins.jobs.dashboard.access import Access, Refusal
from plugboard.plugins.jobs.dashboard.guard import LoginGuard, client_address
from plugboard.plugins.jobs.dashboard.page import dashboard_page, locked_page, login_page
from plugboard.plugins.jobs.errors import JobNotFound, JobsError, JobStateError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import Job, JobStatus, iso

logger = logging.getLogger(__name__)

DEFAULT_PAGE = 20
MAX_PAGE = 100
#: SSE comment lines this often keep proxies and the browser from timing out.
KEEPALIVE = 15.0
#: How often an open stream checks that its client and the server are still there.
_CHECK_INTERVAL = 1.0
#: Form bodies larger than this are not a login.
_MAX_LOGIN_BODY = 8192

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def job_json(job: Job) -> dict[str, Any]:
    """A job as the dashboard's API and event stream show it (camelCase, ISO 8601 times)."""
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status.value,
        "progress": job.progress,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "error": job.error,
        "result": job.result,
        "args": job.args,
        "owner": job.owner,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "startedAt": iso(job.started_at),
        "completedAt": iso(job.completed_at),
        "runAt": iso(job.run_at),
    }


def _dumps(value: Any) -> str:
    # A task's result is JSON by contract; str() keeps one odd value from breaking the page.
    return json.dumps(value, default=str, separators=(",", ":"))


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps, headers={"Cache-Control": "no-store", **(headers or {})})


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="plugboard-jobs"'} if status == 401 else None
    return _json({"error": {"code": code, "message": message}}, status, headers)


def _refused(refusal: Refusal) -> web.Response:
    response = _error(refusal.status, refusal.code, refusal.message)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(int(refusal.retry_after))
    return response


@attrs.define
class Dashboard:
    """The handlers, bound to the dashboard's base path (``jobs.dashboard_path`` without a trailing slash)."""

    base: str
    #: Wrong tokens throttled, sessions revocable: per dashboard, so per app.
    guard: LoginGuard = attrs.Factory(lambda: LoginGuard(access.SESSION_MAX_AGE))

    # -- helpers ---------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> Access | Refusal:
        """:func:`access.authenticate`, with a bearer token that proves nothing counted as a wrong token."""
        app = request.app
        if bearer(request.headers.get("Authorization")) is None or not access.token_configured(app):
            return await access.authenticate(request, self.guard)
        address = client_address(request)
        attempt = await self.guard.throttle.check(app, address)
        if attempt.wait > 0:
            return access.throttled(attempt.wait)
        granted = await access.authenticate(request, self.guard)
        if isinstance(granted, Refusal):
            # A bearer some auth plugin took as an identity is no guess at the admin token.
            if not granted.identified:
                await self.guard.throttle.failed(app, address)
        elif granted.via == "bearer" and attempt.failures:
            await self.guard.throttle.succeeded(app, address)
        return granted

    def _remember_csrf(self, request: web.Request, response: web.StreamResponse, granted: Access) -> None:
        if granted.new_csrf_cookie is not None:
            access.set_cookie(request, response, access.CSRF_COOKIE, granted.new_csrf_cookie, self.base, None)

    def api(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], *, changes: bool = False) -> Handler:
        """Wrap an API handler with the access check (and the CSRF check for changes)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            granted = await self._authenticate(request)
            if isinstance(granted, Refusal):
                return _refused(granted)
            if changes and not access.csrf_ok(request, granted):
                return _error(403, "FORBIDDEN", f"missing or wrong {access.CSRF_HEADER} header")
            if request.app.get(JOBS) is None:
                return _error(503, "UNAVAILABLE", "the jobs plugin is not running")
            try:
                return await handler(request)
            except JobNotFound as e:
                return _error(404, "NOT_FOUND", str(e))
            except JobStateError as e:
                return _error(409, "CONFLICT", str(e))
            except JobsError as e:
                return _error(400, "BAD_REQUEST", str(e))

        return guarded

    # -- the page, login and logout ----------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        granted = await self._authenticate(request)
        if isinstance(granted, Refusal):
            if granted.status == 401:
                return login_page(self.base)
            if granted.status == 429:
                return _throttled_login(self.base, granted)
            return locked_page(self.base, granted.message, granted.status)
        response = dashboard_page(self.base, granted.csrf or "")
        self._remember_csrf(request, response, granted)
        return response

    async def slash(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(self.base)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not access.token_configured(request.app):
            return locked_page(self.base, access.NOT_CONFIGURED.message)
        if not access.same_origin(request):
            return locked_page(self.base, "Cross-site login refused.")
        # Checked before the form is read: while an address waits, the right
        # token is refused too, or guessing would simply go on.
        address = client_address(request)
        attempt = await self.guard.throttle.check(request.app, address)
        if attempt.wait > 0:
            return _throttled_login(self.base, access.throttled(attempt.wait))
        if request.content_length is not None and request.content_length > _MAX_LOGIN_BODY:
            return login_page(self.base, status=400, error="That is not a login.")
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):
            return login_page(self.base, status=400, error="That is not a login.")
        token = form.get("token")
        if not isinstance(token, str) or not access.is_admin_token(request.app, token.strip()):
            wait = await self.guard.throttle.failed(request.app, address)
            later = f" Wait {max(1, math.ceil(wait))} s before trying again." if wait else ""
            return login_page(self.base, error="Wrong token." + later)
        if attempt.failures:
            await self.guard.throttle.succeeded(request.app, address)
        response = web.Response(status=303, headers={"Location": self.base or "/", "Cache-Control": "no-store"})
        access.set_cookie(request, response, access.SESSION_COOKIE, access.new_session(request.app), self.base, access.SESSION_MAX_AGE)
        # Any earlier double-submit value is no longer the one the page gets.
        access.clear_cookie(response, access.CSRF_COOKIE, self.base)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        granted = await self._authenticate(request)
        if isinstance(granted, Access) and not access.csrf_ok(request, granted):
            return _error(403, "FORBIDDEN", f"missing or wrong {access.CSRF_HEADER} header")
        if isinstance(granted, Access) and granted.session is not None and granted.session_until is not None:
            # Clearing the cookie is not enough: a copy of it (a stolen one)
            # would still work until it expires.
            await self.guard.revoked.revoke(request.app, granted.session, granted.session_until)
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        access.clear_cookie(response, access.SESSION_COOKIE, self.base)
        access.clear_cookie(response, access.CSRF_COOKIE, self.base)
        return response

    # -- the JSON API --------------------------------------------------------

    async def summary(self, request: web.Request) -> web.StreamResponse:
        jobs = request.app[JOBS]
        counts = await jobs.counts()
        return _json(
            {
                "counts": {status.value: counts.get(status, 0) for status in JobStatus},
                "total": sum(counts.values()),
                "types": jobs.types(),
            }
        )

    async def list_jobs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        status: JobStatus | None = None
        if query.get("status"):
            try:
                status = JobStatus(query["status"])
            except ValueError:
                names = ", ".join(s.value for s in JobStatus)
                return _error(400, "BAD_REQUEST", f"unknown status {query['status']!r}; expected one of {names}")
        first = DEFAULT_PAGE
        if "first" in query:
            try:
                first = int(query["first"])
            except ValueError:
                first = -1
            if not 1 <= first <= MAX_PAGE:
                return _error(400, "BAD_REQUEST", f"first must be an integer from 1 to {MAX_PAGE}")
        page = await request.app[JOBS].list(status=status, type=query.get("type") or None, first=first, after=query.get("after") or None)
        return _json(
            {
                "jobs": [job_json(job) for job in page.jobs],
                "endCursor": page.end_cursor,
                "hasNextPage": page.has_next_page,
                "totalCount": page.total_count,
            }
        )

    async def get_job(self, request: web.Request) -> web.StreamResponse:
        job = await request.app[JOBS].get(request.match_info["id"])
        if job is None:
            raise JobNotFound(f"no job with id {request.match_info['id']!r}")
        return _json(job_json(job))

    async def retry(self, request: web.Request) -> web.StreamResponse:
        return _json(job_json(await request.app[JOBS].retry(request.match_info["id"])))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        return _json(job_json(await request.app[JOBS].cancel(request.match_info["id"])))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``text/event-stream``: one ``job`` event (the job's JSON) per change of any job."""
        app = request.app
        try:
            watching = app[JOBS].watch()
            changes = await watching.__aenter__()
        except JobsError as e:
            return _error(503, "UNAVAILABLE", str(e))
        try:
            async with sse_response(request, ping_interval=KEEPALIVE, sep="\n") as response:
                # Tells the page the subscription is live (so it refreshes what it may have missed).
                await response.send("{}", event="ready")
                pump = asyncio.create_task(_pump(changes, response))
                watchdog = asyncio.create_task(_until_gone(request, response))
                try:
                    await asyncio.wait((pump, watchdog), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (pump, watchdog):
                        task.cancel()
                    await asyncio.gather(pump, watchdog, return_exceptions=True)
                if pump.done() and not pump.cancelled() and (error := pump.exception()) is not None:
                    if not isinstance(error, (ConnectionResetError, TimeoutError)):
                        logger.error("jobs dashboard event stream failed", exc_info=error)
            return response
        finally:
            await watching.__aexit__(None, None, None)


def _throttled_login(base: str, refusal: Refusal) -> web.Response:
    response = login_page(base, status=429, error=refusal.message)
    response.headers["Retry-After"] = str(int(refusal.retry_after or 1))
    return response


async def _pump(changes: Any, response: Any) -> None:
    async for job in changes:
        await response.send(_dumps(job_json(job)), event="job")


async def _until_gone(request: web.Request, response: Any) -> None:
    """Returns once the client disconnected or the server began shutting down."""
    shutting_down = request.app[keys.SHUTTING_DOWN]
    while True:
        transport = request.transport
        if transport is None or transport.is_closing() or shutting_down["value"] or not response.is_connected():
            return
        await asyncio.sleep(_CHECK_INTERVAL)
