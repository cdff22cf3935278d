"""The dashboard's HTML (the page, the login form, the locked notice) and its two static files.

Every page runs under a strict Content-Security-Policy: its one script and
one stylesheet come from this origin and carry a per-response nonce; nothing
inline, nothing from elsewhere. The JavaScript and CSS sit beside this module
(package data) and are read once, on first request.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import secrets
from pathlib import Path
from typing import NamedTuple

from aiohttp import web

_HERE = Path(__file__).parent

# The whitelist: nothing else is ever read from disk, whatever the URL.
_CONTENT_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


class _Asset(NamedTuple):
    body: bytes
    etag: str


# Filled on first request (no import-time file reads); values never change.
_loaded: dict[str, _Asset] = {}


def _load(name: str) -> _Asset:
    body = (_HERE / name).read_bytes()
    return _Asset(body, hashlib.sha256(body).hexdigest()[:32])


async def serve_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = _CONTENT_TYPES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    asset = _loaded.get(name)
    if asset is None:
        asset = _loaded.setdefault(name, await asyncio.to_thread(_load, name))
    # Revalidated on every load (cheap 304s): a plugin upgrade is seen at once.
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.if_none_match and any(tag.value in (asset.etag, "*") for tag in request.if_none_match):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(body=asset.body, content_type=content_type, charset="utf-8", headers=headers)
    response.etag = asset.etag
    return response


def _headers(nonce: str) -> dict[str, str]:
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # Not no-referrer: that makes the login form's Origin "null" (refused as cross-site).
        "Referrer-Policy": "same-origin",
        # The nonce and the CSRF value must not be replayed from a cache.
        "Cache-Control": "no-store",
    }


def _render(base: str, title: str, body: str, *, status: int = 200, script: bool = False) -> web.Response:
    nonce = secrets.token_urlsafe(18)
    static = html.escape(f"{base}/static/", quote=True)
    script_tag = f'<script nonce="{nonce}" src="{static}dashboard.js" defer></script>\n' if script else ""
    page = _SHELL.format(title=html.escape(title), nonce=nonce, static=static, script=script_tag, body=body)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8", headers=_headers(nonce))


def dashboard_page(base: str, csrf: str) -> web.Response:
    """The dashboard itself; ``dashboard.js`` fills it from the JSON API."""
    attrs_ = f'data-base="{html.escape(base, quote=True)}" data-csrf="{html.escape(csrf, quote=True)}"'
    return _render(base, "Jobs · Plugboard", _DASHBOARD.format(attrs=attrs_), script=True)


def login_page(base: str, *, status: int = 401, error: str | None = None) -> web.Response:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    action = html.escape(f"{base}/login", quote=True)
    return _render(base, "Log in · Jobs · Plugboard", _LOGIN.format(action=action, message=message), status=status)


def locked_page(base: str, message: str, status: int = 403) -> web.Response:
    return _render(base, "Jobs · Plugboard", _LOCKED.format(message=html.escape(message)), status=status)


_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" nonce="{nonce}" href="{static}dashboard.css">
{script}</head>
<body>
{body}
</body>
</html>
"""

_LOGIN = """<main class="narrow">
<h1>Jobs</h1>
<form method="post" action="{action}" class="login">
{message}<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
</main>"""

_LOCKED = """<main class="narrow">
<h1>Jobs</h1>
<p class="error" role="alert">{message}</p>
</main>"""

_DASHBOARD = """<div id="app" {attrs}>
<header>
<h1>Jobs</h1>
<span id="live" class="live" title="Live updates">connecting…</span>
<button id="logout" type="button" class="link">Log out</button>
</header>
<nav id="counts" class="counts" aria-label="Jobs per status"></nav>
<main>
<section class="list">
<form id="filters" class="filters">
<label>Status <select id="filter-status" name="status"><option value="">all</option></select></label>
<label>Type <select id="filter-type" name="type"><option value="">all</option></select></label>
<span id="total" class="muted"></span>
</form>
<p id="error" class="error" role="alert" hidden></p>
<table id="jobs">
<thead><tr><th>Status</th><th>Type</th><th>Progress</th><th>Attempts</th><th>Created</th><th>Id</th></tr></thead>
<tbody></tbody>
</table>
<p id="empty" class="muted" hidden>No jobs.</p>
<button id="more" type="button" hidden>Load more</button>
</section>
<aside id="detail" hidden>
<header><h2 id="detail-title"></h2><button id="detail-close" type="button" class="link" aria-label="Close">×</button></header>
<p><span id="detail-status" class="status"></span> <progress id="detail-progress" max="100" value="0"></progress> <span id="detail-percent"></span></p>
<div class="actions"><button id="retry" type="button" hidden>Retry</button><button id="cancel" type="button" hidden>Cancel</button></div>
<dl>
<dt>Id</dt><dd id="detail-id" class="mono"></dd>
<dt>Attempts</dt><dd id="detail-attempts"></dd>
<dt>Created</dt><dd id="detail-created"></dd>
<dt>Started</dt><dd id="detail-started"></dd>
<dt>Finished</dt><dd id="detail-completed"></dd>
<dt>Next attempt</dt><dd id="detail-runat"></dd>
<dt>Owner</dt><dd id="detail-owner"></dd>
</dl>
<h3>Error</h3><pre id="detail-error" class="error"></pre>
<h3>Arguments</h3><pre id="detail-args"></pre>
<h3>Result</h3><pre id="detail-result"></pre>
</aside>
</main>
<noscript>The dashboard needs JavaScript.</noscript>
</div>"""
