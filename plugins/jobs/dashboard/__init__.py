"""The jobs dashboard (the seed's bull-board): a page at ``jobs.dashboard_path``.

Served by the plugin itself, no CDN and no build step: one HTML page, one
script (``dashboard.js``) and one stylesheet (``dashboard.css``) beside this
module. Counts per status, a job list filtered by status and type, job
detail, Retry and Cancel, all updated live over SSE. Admins only: the
``server.admin_token`` (a login form for browsers, a bearer token for API
clients) or the ``admin`` role (see :mod:`.access`).

Routes, under ``<path>`` (default ``/jobs``)::

    GET  <path>                       the page (or the login form, 401; or the locked notice, 403)
    POST <path>/login                 form field ``token``: sets the session cookie, redirects to the page
                                      (wrong tokens throttled per address: see :mod:`.guard`)
    POST <path>/logout                revokes the session and clears the cookie
    GET  <path>/static/{name}         dashboard.js, dashboard.css
    GET  <path>/api/summary           {"counts": {status: n}, "total": n, "types": [...]}
    GET  <path>/api/jobs              ?status=&type=&first=&after= -> {"jobs", "endCursor", "hasNextPage", "totalCount"}
    GET  <path>/api/jobs/{id}         one job
    POST <path>/api/jobs/{id}/retry   FAILED/CANCELLED -> PENDING
    POST <path>/api/jobs/{id}/cancel  PENDING/RETRYING/PROCESSING -> CANCELLED
    GET  <path>/api/events            SSE: a ``job`` event per change of any job

POSTs need ``Authorization: Bearer <token>``, or the session (or role) plus
the ``X-Plugboard-CSRF`` header the page gets in its markup.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


def dashboard_routes(config: Any) -> list[web.RouteDef]:
    """The dashboard's routes for a :class:`~plugboard.plugins.jobs.config.JobsConfig`."""
    from plugboard.plugins.jobs.dashboard.page import serve_asset
    from plugboard.plugins.jobs.dashboard.views import Dashboard

    base = config.dashboard_path.rstrip("/")
    view = Dashboard(base)
    api = f"{base}/api"
    routes = [
        web.get(base or "/", view.page),
        web.post(f"{base}/login", view.login),
        web.post(f"{base}/logout", view.logout),
        web.get(f"{base}/static/{{name}}", serve_asset),
        web.get(f"{api}/summary", view.api(view.summary)),
        web.get(f"{api}/jobs", view.api(view.list_jobs)),
        web.get(f"{api}/jobs/{{id}}", view.api(view.get_job)),
        web.post(f"{api}/jobs/{{id}}/retry", view.api(view.retry, changes=True)),
        web.post(f"{api}/jobs/{{id}}/cancel", view.api(view.cancel, changes=True)),
        web.get(f"{api}/events", view.api(view.events)),
    ]
    if base:
        routes.append(web.get(f"{base}/", view.slash))
    return routes
