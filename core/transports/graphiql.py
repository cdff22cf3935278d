"""GraphiQL in the browser, served by the core from vendored files (no CDN).

A browser that opens the GraphQL path (``GET`` without a ``query``) gets a
small HTML page instead of a JSON error; the page loads GraphiQL and React
from :data:`ASSET_PREFIX` and talks to the same path with ``POST``
``application/json``. The page runs under a strict Content-Security-Policy:
scripts and styles only from this origin, plus the inline bootstrap script
and stylesheet carrying a per-response nonce.

Subscriptions run over graphql-ws (``graphql-transport-ws`` on the GraphQL
path) when a ``websocket`` transport is installed, else over graphql-sse
(distinct connections, ``Accept: text/event-stream`` on the GraphQL path) when
an ``sse`` one is; without either GraphiQL runs queries and mutations only.
Every HTTP request carries the ``graphql-require-preflight`` header, so the
CSRF prevention lets GraphiQL's GET requests through too.

VERSIONS: graphiql 4.1.2, react 18.3.1, react-dom 18.3.1, graphql-ws 5.16.2,
graphql-sse 2.6.1 (UMD production builds from the npm registry; see
``static/graphiql/LICENSES.txt``). graphiql 4.1.2 is the last release with a
UMD build usable without a bundler.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import secrets
from pathlib import Path
from typing import NamedTuple

from aiohttp import web

from plugboard import keys

ASSET_PREFIX = "/_plugboard/graphiql/"

# Not a package (no __init__.py): the files are found next to this module.
_STATIC_DIR = Path(__file__).parent / "static" / "graphiql"

# Versioned file names: assets are cached as immutable, so an upgrade must
# change their URLs.
_REACT_JS = "react-18.3.1.production.min.js"
_REACT_DOM_JS = "react-dom-18.3.1.production.min.js"
_GRAPHIQL_JS = "graphiql-4.1.2.min.js"
_GRAPHIQL_CSS = "graphiql-4.1.2.min.css"
_GRAPHQL_WS_JS = "graphql-ws-5.16.2.min.js"
_GRAPHQL_SSE_JS = "graphql-sse-2.6.1.min.js"
#: Transport name (``plugboard_transports``) -> the client GraphiQL subscribes with.
_SUBSCRIPTION_CLIENTS = (("websocket", "ws", _GRAPHQL_WS_JS), ("sse", "sse", _GRAPHQL_SSE_JS))

# Order matters: GraphiQL's UMD build reads window.React and window.ReactDOM.
_SCRIPTS = (_REACT_JS, _REACT_DOM_JS, _GRAPHIQL_JS)
_STYLESHEETS = (_GRAPHIQL_CSS,)

# The whitelist: nothing outside it is ever read from disk, whatever the URL.
_CONTENT_TYPES = {
    _REACT_JS: "text/javascript",
    _REACT_DOM_JS: "text/javascript",
    _GRAPHIQL_JS: "text/javascript",
    _GRAPHIQL_CSS: "text/css",
    _GRAPHQL_WS_JS: "text/javascript",
    _GRAPHQL_SSE_JS: "text/javascript",
}

_IMMUTABLE = "public, max-age=31536000, immutable"


class _Asset(NamedTuple):
    body: bytes
    gzipped: bytes
    etag: str


# Filled on first request (no import-time file reads); values never change.
_loaded: dict[str, _Asset] = {}


def wants_graphiql(request: web.Request) -> bool:
    """Whether to answer this request with the GraphiQL page instead of JSON.

    Only browsers navigating to the endpoint: a GET without ``query`` whose
    Accept header ranks ``text/html`` above every JSON type (``*/*`` alone,
    as curl sends, does not count), and only when ``graphql.graphiql`` is on.
    """
    if request.method != "GET" or "query" in request.query:
        return False
    if not request.app[keys.CORE_CONFIG].graphql.graphiql:
        return False
    accept = _parse_accept(request.headers.get("Accept", ""))
    html_q = _quality(accept, "text/html")
    json_q = max(_quality(accept, "application/json"), _quality(accept, "application/graphql-response+json"))
    return html_q > 0 and html_q > json_q


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for item in header.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    return ranges


def _quality(ranges: list[tuple[str, float]], media: str) -> float:
    """The q of the most specific range matching ``media`` (RFC 9110 §12.5.1)."""
    main = media.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for candidate, q in ranges:
        if candidate == media:
            specificity = 2
        elif candidate == f"{main}/*":
            specificity = 1
        elif candidate == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def graphiql_page(request: web.Request) -> web.Response:
    """The GraphiQL HTML page, mounted against ``request.path``."""
    nonce = secrets.token_urlsafe(18)
    endpoint = html.escape(request.path, quote=True)
    styles = "\n".join(f'<link rel="stylesheet" href="{ASSET_PREFIX}{name}">' for name in _STYLESHEETS)
    subscriptions, client_js = _subscription_client(request.app)
    names = (*_SCRIPTS, client_js) if client_js else _SCRIPTS
    scripts = "\n".join(f'<script src="{ASSET_PREFIX}{name}"></script>' for name in names)
    page = _PAGE.format(
        nonce=nonce,
        endpoint=endpoint,
        subscriptions=subscriptions,
        prefix=ASSET_PREFIX,
        styles=styles,
        scripts=scripts,
        bootstrap=_BOOTSTRAP,
    )
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            # GraphiQL sets styles through the CSSOM (allowed); its dialogs'
            # scroll lock injects a <style> that gets the nonce from the
            # bootstrap script, so no 'unsafe-inline' is needed.
            f"style-src 'self' 'nonce-{nonce}'",
            # The stylesheet embeds its fonts and a few images as data: URLs.
            "font-src 'self' data:",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # The nonce must not be replayed from a cache.
            "Cache-Control": "no-store",
        },
    )


def _subscription_client(app: web.Application) -> tuple[str, str | None]:
    """``("ws" | "sse" | "none", the client script)`` from the transports the app serves."""
    names = {getattr(t, "name", None) for t in app.get(keys.TRANSPORTS, ())}
    for transport, kind, script in _SUBSCRIPTION_CLIENTS:
        if transport in names:
            return kind, script
    return "none", None


def asset_routes() -> list[web.RouteDef]:
    """The GET route serving the vendored GraphiQL files."""
    return [web.get(ASSET_PREFIX + "{name}", _serve_asset)]


async def _serve_asset(request: web.Request) -> web.StreamResponse:
    # match_info is percent-decoded, so "%2e%2e" arrives as ".." and is not
    # in the whitelist like any other unknown name.
    name = request.match_info["name"]
    content_type = _CONTENT_TYPES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    asset = _loaded.get(name)
    if asset is None:
        # Reading and compressing ~1 MB would stall the event loop.
        asset = _loaded.setdefault(name, await asyncio.to_thread(_load_asset, name))

    gzip_ok = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = asset.etag + ("-gz" if gzip_ok else "")
    headers = {
        "Cache-Control": _IMMUTABLE,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if request.if_none_match and any(tag.value in (etag, "*") for tag in request.if_none_match):
        response = web.Response(status=304, headers=headers)
        response.etag = etag
        return response
    if gzip_ok:
        headers["Content-Encoding"] = "gzip"
    response = web.Response(
        body=asset.gzipped if gzip_ok else asset.body,
        content_type=content_type,
        charset="utf-8",
        headers=headers,
    )
    response.etag = etag
    return response


def _load_asset(name: str) -> _Asset:
    body = (_STATIC_DIR / name).read_bytes()
    # mtime=0 keeps the compressed bytes (and so the gzip ETag) reproducible.
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return _Asset(body=body, gzipped=gzipped, etag=hashlib.sha256(body).hexdigest()[:32])


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, *params = [p.strip() for p in item.split(";")]
        if coding.lower() not in ("gzip", "x-gzip"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


_BOOTSTRAP = r"""
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  if (typeof GraphiQL === "undefined" || typeof ReactDOM === "undefined") {
    root.textContent = "GraphiQL could not load its scripts from " + root.dataset.assets;
    return;
  }
  // react-remove-scroll (GraphiQL's dialogs) tags the style element it injects
  // with this global, which keeps the CSP free of 'unsafe-inline'.
  window.__webpack_nonce__ = document.currentScript.nonce;
  var endpoint = root.dataset.endpoint;
  // Apollo-style CSRF prevention lets requests with this header through,
  // GETs included.
  var headers = { "graphql-require-preflight": "1" };
  var options = {
    url: endpoint,
    headers: headers,
    // The endpoint answers plain JSON, never multipart/mixed increments.
    enableIncrementalDelivery: false
  };
  var kind = root.dataset.subscriptions;
  if (kind === "ws" && typeof graphqlWs !== "undefined") {
    // GraphiQL sends subscriptions to this client, everything else over HTTP.
    var wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + endpoint;
    options.wsClient = graphqlWs.createClient({ url: wsUrl, lazy: true });
  }
  var fetcher = GraphiQL.createFetcher(options);
  if (kind === "sse" && typeof graphqlSse !== "undefined") {
    var sse = graphqlSse.createClient({ url: endpoint, headers: headers, retryAttempts: 0 });
    var overHttp = fetcher;
    fetcher = function (params, opts) {
      return isSubscription(params) ? sse.iterate(params) : overHttp(params, opts);
    };
  }
  // The operation to run is a subscription: a cheap look at the document,
  // enough for GraphiQL (the server validates it).
  function isSubscription(params) {
    var query = (params.query || "").replace(/#[^\n]*/g, "");
    var pattern = /(?:^|})\s*subscription\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g;
    var match;
    while ((match = pattern.exec(query))) {
      if (!params.operationName || match[1] === params.operationName) return true;
    }
    return false;
  }
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, { fetcher: fetcher }));
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Plugboard GraphiQL</title>
<link rel="icon" href="data:,">
{styles}
<style nonce="{nonce}">html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql" data-endpoint="{endpoint}" data-subscriptions="{subscriptions}" data-assets="{prefix}">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript.</noscript>
{scripts}
<script nonce="{nonce}">{bootstrap}</script>
</body>
</html>
"""
