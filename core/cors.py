"""Cross-origin access: one origins policy (``server.cors``) for CORS and for WebSocket upgrades.

This module owns the whole policy: its settings (:class:`CorsConfig`, the
``server.cors`` section, checked like every other section), the compiled
form (:class:`OriginPolicy`) and the two pieces that apply it to every route
of the app, the core's and the plugins' alike:

* :func:`cors_middleware`, placed right after the request id and before every
  plugin middleware, answers preflights (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) itself, so they never reach CSRF
  prevention, a rate limit or a handler; a refused preflight is a 403 without
  any ``Access-Control-*`` header. It also refuses, with 403 before the
  upgrade, a WebSocket handshake whose ``Origin`` is neither the server's own
  origin nor an allowed one (browsers do not apply CORS to WebSockets, so
  this check is the only guard there). Requests without ``Origin`` (curl,
  server-side clients) pass untouched.
* :func:`_on_response_prepare` (aiohttp's ``on_response_prepare`` signal)
  adds ``Access-Control-Allow-Origin`` and friends, plus ``Vary: Origin``, to
  every response just before its headers go out. A signal rather than the
  middleware's return path, because SSE streams and file downloads send
  their headers from inside the handler, and errors raised as
  ``HTTPException`` become responses after the middleware has returned.

A small module of our own rather than aiohttp-cors: that library registers
an ``OPTIONS`` route per resource, so preflights run after every middleware
(a rate limit would count them), it refuses resources that already have a
``*``-method route (the GraphQL path is one), it must be told about each
route (plugins add theirs), it has no ``https://*.example.com`` or
``http://localhost:*`` patterns, and it does not check WebSocket origins.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Iterable

import attrs
from aiohttp import hdrs, web
from yarl import URL

from plugboard import keys
from plugboard.units import Duration

__all__ = [
    "CorsConfig",
    "OriginPolicy",
    "cors_middleware",
    "describe",
    "install",
]

DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
#: What Apollo Client, graphql-ws/graphql-sse clients and EventSource reconnects send.
DEFAULT_HEADERS = (
    "content-type",
    "authorization",
    "x-api-key",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "graphql-require-preflight",
    "x-graphql-event-stream-token",
    "last-event-id",
    "x-request-id",
)
DEFAULT_EXPOSE_HEADERS = ("x-request-id", "ratelimit", "ratelimit-policy", "retry-after", "etag")
# CORS-safelisted request headers: a browser lists them in a preflight only
# for unusual values, and refusing them would surprise everyone.
_SAFELISTED = frozenset({"accept", "accept-language", "content-language"})

_SCHEME = r"[a-z][a-z0-9+.-]*"
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_PATTERN = re.compile(
    rf"(?P<scheme>{_SCHEME})://"
    rf"(?P<wild>\*\.)?"
    rf"(?P<host>\[[0-9a-f:.]+\]|{_LABEL}(?:\.{_LABEL})*)"
    r"(?::(?P<port>\*|\d{1,5}))?"
)
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ORIGIN_HELP = "expected scheme://host[:port] (e.g. 'https://app.example.com'), a pattern ('https://*.example.com', 'http://localhost:*'), '*' or 'null'"


# -- settings -----------------------------------------------------------------


def _parse_pattern(text: str) -> tuple[str, str, bool, int | str | None]:
    """``(scheme, host, any_subdomain, port)``; port None is the scheme's default, ``"*"`` any.

    :raises ValueError: with the reason the pattern is not an origin.
    """
    lowered = text.strip().lower()
    match = _PATTERN.fullmatch(lowered)
    if match is None:
        if "://" not in lowered:
            raise ValueError(f"{text!r} is not an origin: {_ORIGIN_HELP}")
        rest = lowered.split("://", 1)[1]
        if "/" in rest or "?" in rest or "#" in rest:
            raise ValueError(f"{text!r} is not an origin: an origin has no path, query or trailing slash (write {lowered.split('://', 1)[0]}://{re.split(r'[/?#]', rest)[0]})")
        if "*" in rest:
            raise ValueError(f"{text!r} is not an origin: '*' may only stand for leading subdomains ('https://*.example.com') or the port ('http://localhost:*')")
        raise ValueError(f"{text!r} is not an origin: {_ORIGIN_HELP}")
    scheme, host, port_text = match["scheme"], match["host"], match["port"]
    port: int | str | None = port_text
    if port_text is not None and port_text != "*":
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ValueError(f"{text!r} is not an origin: port {port} is not between 1 and 65535")
        if port == _DEFAULT_PORTS.get(scheme):
            port = None  # browsers leave the default port out of Origin
    return scheme, host, match["wild"] is not None, port


def _check_origins(instance: Any, attribute: attrs.Attribute, value: Iterable[str]) -> None:
    problems = []
    for item in value:
        if item in ("*", "null"):
            continue
        try:
            _parse_pattern(item)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))


def _check_tokens(what: str) -> Callable[[Any, attrs.Attribute, Iterable[str]], None]:
    def check(instance: Any, attribute: attrs.Attribute, value: Iterable[str]) -> None:
        bad = [item for item in value if not _TOKEN.fullmatch(item)]
        if bad:
            raise ValueError(f"not {what}: {', '.join(repr(b) for b in bad)}")

    return check


def _check_credentials(instance: Any, attribute: attrs.Attribute, value: bool) -> None:
    if value and "*" in instance.origins:
        raise ValueError(
            "cannot be true while server.cors.origins contains '*': browsers refuse credentials "
            "with 'Access-Control-Allow-Origin: *', and echoing any origin instead would let every "
            "site act with your users' cookies; list the origins that may"
        )
    if value and "*" in instance.expose_headers:
        raise ValueError("cannot be true while server.cors.expose_headers contains '*' (with credentials, browsers read '*' as a header name); list the headers")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError("expected zero or more seconds")


@attrs.define(frozen=True, kw_only=True)
class CorsConfig:
    """``server.cors:`` — which other origins' pages may call this server from a browser.

    The same ``origins`` decide which pages may open WebSockets here (the
    server's own origin always may).
    """

    #: Exact origins (``https://app.example.com``), patterns
    #: (``https://*.example.com``, ``http://localhost:*``), ``*`` (any origin
    #: but ``null``) or ``null`` (sandboxed pages, file:// — only if listed).
    origins: tuple[str, ...] = attrs.field(default=(), validator=_check_origins)
    #: Methods a preflight may ask for ("*": any).
    methods: tuple[str, ...] = attrs.field(default=DEFAULT_METHODS, validator=_check_tokens("a method name"))
    #: Request headers a preflight may ask for, case-insensitive ("*": any).
    headers: tuple[str, ...] = attrs.field(default=DEFAULT_HEADERS, validator=_check_tokens("a header name"))
    #: Response headers a page's script may read beyond the safelisted ones.
    expose_headers: tuple[str, ...] = attrs.field(default=DEFAULT_EXPOSE_HEADERS, validator=_check_tokens("a header name"))
    #: Let pages send cookies / HTTP auth (``Access-Control-Allow-Credentials``); never with ``*``.
    credentials: bool = attrs.field(default=False, validator=_check_credentials)
    #: How long a browser may cache a preflight's answer (Chromium caps it at 2h).
    max_age: Duration = attrs.field(default=600.0, validator=_non_negative)


# -- the compiled policy --------------------------------------------------------


@attrs.define(frozen=True)
class _Pattern:
    scheme: str
    host: str
    any_subdomain: bool
    port: int | str | None

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if scheme != self.scheme:
            return False
        if self.any_subdomain:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        return self.port == "*" or self.port == port


class OriginPolicy:
    """A :class:`CorsConfig` compiled for lookups on every request."""

    def __init__(self, config: CorsConfig) -> None:
        self.config = config
        self.any_origin = "*" in config.origins
        self.allow_null = "null" in config.origins
        self.patterns = [_Pattern(*_parse_pattern(o)) for o in config.origins if o not in ("*", "null")]
        self.any_method = "*" in config.methods
        self.methods = frozenset(m.upper() for m in config.methods)
        self.any_header = "*" in config.headers
        self.headers = frozenset(h.lower() for h in config.headers) | _SAFELISTED
        self.allow_methods = ", ".join(dict.fromkeys(m.upper() for m in config.methods if m != "*"))
        self.expose = ", ".join(config.expose_headers)
        self.max_age = str(int(config.max_age))

    @property
    def enabled(self) -> bool:
        """Whether any other origin may be allowed at all."""
        return bool(self.config.origins)

    def allows(self, origin: str) -> bool:
        """Whether a page of ``origin`` (an ``Origin`` header's value) may call this server."""
        if origin == "null":
            return self.allow_null
        parsed = _parse_origin(origin)
        if parsed is None:
            return False
        if self.any_origin:
            return True
        return any(p.matches(*parsed) for p in self.patterns)

    def allow_origin_value(self, origin: str) -> str:
        """The ``Access-Control-Allow-Origin`` value for an allowed origin."""
        return "*" if self.any_origin and not self.config.credentials else origin

    def preflight(self, request: web.Request, origin: str) -> web.Response:
        """Answer a preflight: 204 with the grant, or 403 (plain text, no ``Access-Control-*``) saying why."""
        vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD, "").strip()
        requested = [h.strip().lower() for h in request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",") if h.strip()]
        if not self.allows(origin):
            reason = f"origin {origin[:200]!r} is not allowed (server.cors.origins)"
        elif not self.any_method and method.upper() not in self.methods:
            reason = f"method {method!r} is not allowed (server.cors.methods)"
        else:
            refused = [h for h in requested if not self.any_header and h not in self.headers]
            reason = f"request header {', '.join(map(repr, refused))} is not allowed (server.cors.headers)" if refused else ""
        if reason:
            return web.Response(status=403, text=f"CORS preflight refused: {reason}\n", headers={hdrs.VARY: vary})
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: self.allow_origin_value(origin),
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: method.upper() if self.any_method else self.allow_methods,
            hdrs.ACCESS_CONTROL_MAX_AGE: self.max_age,
            hdrs.VARY: vary,
        }
        if requested:
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(requested)
        if self.config.credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
        return web.Response(status=204, headers=headers)

    def allows_websocket(self, request: web.Request, origin: str) -> bool:
        """Whether a WebSocket handshake with this ``Origin`` may upgrade: same origin, or allowed."""
        return _same_origin(request, origin) or self.allows(origin)


def _parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port or None for the default)`` of an ``Origin`` value, or None if it is not one."""
    match = _PATTERN.fullmatch(origin.strip().lower())
    if match is None or match["wild"] or match["port"] == "*":
        return None
    scheme = match["scheme"]
    port = int(match["port"]) if match["port"] else None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, match["host"], port


def _same_origin(request: web.Request, origin: str) -> bool:
    # Host and port only, not the scheme: behind a TLS-terminating proxy the
    # page is https:// while this server sees plain http. The Host header is
    # the browser's own, so a page elsewhere cannot pass for this one.
    parsed = _parse_origin(origin)
    if parsed is None:
        return False
    scheme, host, port = parsed
    try:
        here = URL.build(scheme=scheme, authority=request.host)
    except (ValueError, TypeError):
        return False
    here_port = here.explicit_port
    if here_port == _DEFAULT_PORTS.get(scheme):
        here_port = None
    # yarl gives IPv6 hosts without their brackets.
    return (here.host or "").lower() == host.strip("[]") and here_port == port


# -- wiring ---------------------------------------------------------------------

# Preflights and refused upgrades: their answers get no grant from the signal.
_ANSWERED = web.RequestKey("plugboard.cors_answered", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, config: CorsConfig) -> None:
    """Put the policy on ``app``: its middleware next (call before plugin middleware is added), its signal."""
    policy = OriginPolicy(config)
    app[keys.CORS_POLICY] = policy
    # Always: even with no origins listed, preflights get their 403 and
    # WebSocket upgrades from other origins are refused.
    app.middlewares.append(cors_middleware)
    if policy.enabled:
        app.on_response_prepare.append(_on_response_prepare)


@web.middleware
def cors_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Answer preflights and refuse WebSocket upgrades from other origins; everything else passes."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        # A plain function that hands back the handler's coroutine: requests
        # without an Origin (most) get no coroutine of this middleware's
        # around them, which every await of theirs would pass through.
        return handler(request)
    return _cross_origin(request, handler, origin)


async def _cross_origin(request: web.Request, handler: Handler, origin: str) -> web.StreamResponse:
    policy = request.app[keys.CORS_POLICY]
    if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
        request[_ANSWERED] = True
        if isinstance(request.match_info.http_exception, web.HTTPNotFound):
            return await handler(request)
        return policy.preflight(request, origin)
    if _is_websocket_upgrade(request) and not policy.allows_websocket(request, origin):
        request[_ANSWERED] = True
        return web.Response(
            status=403,
            text=f"WebSocket upgrade refused: origin {origin[:200]!r} is not this server's and not allowed (server.cors.origins)\n",
        )
    return await handler(request)


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if response.status == 101:
        return
    # Only a preflight or a refused upgrade (403) can have been answered here.
    # Asked of every response, request.get() of a key the request lacks
    # raises and catches a KeyError inside aiohttp's Mapping.
    if (request.method == hdrs.METH_OPTIONS or response.status == 403) and request.get(_ANSWERED):
        return
    policy = request.app[keys.CORS_POLICY]
    _add_vary(response, "Origin")
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not policy.allows(origin):
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = policy.allow_origin_value(origin)
    if policy.config.credentials:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    if policy.expose:
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = policy.expose


def _add_vary(response: web.StreamResponse, name: str) -> None:
    present = [v.strip().lower() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()]
    if name.lower() not in present and "*" not in present:
        response.headers[hdrs.VARY] = ", ".join([*filter(None, [response.headers.get(hdrs.VARY, "").strip()]), name])


def _is_websocket_upgrade(request: web.Request) -> bool:
    tokens = request.headers.get(hdrs.UPGRADE, "").lower().split(",")
    return "websocket" in (t.strip() for t in tokens)


def describe(config: CorsConfig) -> list[str]:
    """The effective policy in a few lines, for ``plugboard check``."""
    if not config.origins:
        return [
            "CORS (server.cors): no other origin allowed (server.cors.origins is empty)",
            "WebSocket Origin: this server's own origin only (clients sending no Origin are not browsers and pass)",
        ]
    lines = [
        f"CORS (server.cors): origins {', '.join(config.origins)}",
        f"  methods {', '.join(config.methods)}; headers {', '.join(config.headers)}",
        f"  expose {', '.join(config.expose_headers) or '-'}; credentials {str(config.credentials).lower()}; preflight max-age {int(config.max_age)}s",
        "WebSocket Origin: this server's own origin and the CORS origins above (clients sending no Origin pass)",
    ]
    return lines
