"""Who may use the dashboard, and the browser session that remembers it.

Three ways in, checked in this order:

- ``Authorization: Bearer <server.admin_token>`` (API clients, scripts);
- the session cookie the login form sets: ``<issued>.<nonce>.<signature>``,
  HMAC-SHA256-signed with a key derived from the admin token (never the token
  itself), HttpOnly, SameSite=Strict, Secure when the client used HTTPS
  (:func:`.guard.is_https`), scoped to the dashboard's path, valid for
  :data:`SESSION_MAX_AGE`. Changing the token ends every session; logging out
  ends that one (:class:`.guard.RevokedSessions`);
- the ``admin`` role on the GraphQL context an auth plugin builds for the
  request (:func:`plugboard.graphql.context.has_admin_role`).

Wrong tokens (the login form, or a bearer no auth plugin accepts) are
throttled per client address with backoff (:class:`.guard.LoginThrottle`).

State-changing requests made with the cookie or the role also need the
:data:`CSRF_HEADER`: for a session it is an HMAC of the session's nonce; for
the role (whose own credentials the dashboard does not see) it is a random
value the page also keeps in a cookie (double submit). The page carries the
value in its markup; a cross-site page can neither read it nor send the
header without a CORS preflight, which is never granted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import yarl
from aiohttp import web

from plugboard import keys
from plugboard.graphql.errors import GraphQLError
from plugboard.middleware import REQUEST_ID
from plugboard.graphql.context import bearer, has_admin_role, is_admin_token
from plugboard.plugins.jobs.dashboard.guard import is_https

if TYPE_CHECKING:
    from plugboard.plugins.jobs.dashboard.guard import LoginGuard

SESSION_COOKIE = "plugboard_jobs_session"
CSRF_COOKIE = "plugboard_jobs_csrf"
CSRF_HEADER = "X-Plugboard-CSRF"
#: How long a login lasts.
SESSION_MAX_AGE = 12 * 3600

_KEY_LABEL = b"plugboard.jobs.dashboard.session/v1"


@attrs.frozen
class Access:
    """A request the dashboard accepted, and how."""

    via: Literal["bearer", "session", "role"]
    #: What the CSRF header must carry (None for bearer requests, which need none).
    csrf: str | None = None
    #: For ``role``: a new double-submit value to store in the CSRF cookie.
    new_csrf_cookie: str | None = None
    #: For ``session``: its nonce (what a logout revokes) and when it expires.
    session: str | None = None
    session_until: float | None = None


@attrs.frozen
class Refusal:
    """Why a request was refused: 401 (log in) or 403 (no way in is configured)."""

    status: int
    code: str
    message: str
    #: The request carried an identity an auth plugin accepted (just not an admin's).
    identified: bool = False
    #: For 429: seconds until the client may try again.
    retry_after: float | None = None


NOT_CONFIGURED = Refusal(
    403,
    "FORBIDDEN",
    "The jobs dashboard is locked: set server.admin_token, or enable an auth plugin that gives admins the 'admin' role.",
)
LOGIN_REQUIRED = Refusal(401, "UNAUTHENTICATED", "Log in with the admin token.")
NOT_ADMIN = Refusal(403, "FORBIDDEN", "The jobs dashboard is for admins only.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(app: web.Application) -> bytes | None:
    token = app[keys.CORE_CONFIG].server.admin_token
    if not token:
        return None
    return hmac.new(str(token).encode(), _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def new_session(app: web.Application, now: float | None = None) -> str:
    """A signed session value (the admin token must be configured)."""
    key = _signing_key(app)
    if key is None:
        raise RuntimeError("sessions need server.admin_token")
    payload = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_mac(key, payload)}"


def _session(app: web.Application, value: str | None, now: float | None = None) -> tuple[str, int] | None:
    """The nonce and issue time of a valid, unexpired session value, else None (revocation not checked)."""
    key = _signing_key(app)
    if key is None or not value:
        return None
    issued, _, rest = value.partition(".")
    nonce, _, signature = rest.partition(".")
    if not issued.isdigit() or len(issued) > 12 or not nonce or not signature:
        return None
    if not hmac.compare_digest(signature.encode(), _mac(key, f"{issued}.{nonce}").encode()):
        return None
    age = (now if now is not None else time.time()) - int(issued)
    if not -60 <= age < SESSION_MAX_AGE:
        return None
    return nonce, int(issued)


def _session_csrf(app: web.Application, nonce: str) -> str:
    key = _signing_key(app)
    assert key is not None  # only called for a valid session
    return _mac(key, f"csrf.{nonce}")


def token_configured(app: web.Application) -> bool:
    return bool(app[keys.CORE_CONFIG].server.admin_token)


async def _context_of(request: web.Request) -> Any:
    """The GraphQL context auth plugins build for this request (None if they reject it)."""
    builder = request.app.get(keys.CONTEXT_BUILDER)
    if builder is None:
        return None
    request_id = request.get(REQUEST_ID) or secrets.token_hex(8)
    try:
        return await builder.build(request.app, request, request_id=request_id, transport="jobs-dashboard")
    except GraphQLError:
        # The auth plugin rejected the credentials: nobody in particular.
        return None


async def authenticate(request: web.Request, guard: "LoginGuard") -> Access | Refusal:
    """How the request gets in, or why it does not (a session ``guard`` revoked does not)."""
    app = request.app
    if is_admin_token(app, bearer(request.headers.get("Authorization"))):
        return Access("bearer")
    session = _session(app, request.cookies.get(SESSION_COOKIE))
    if session is not None and not await guard.revoked.is_revoked(app, session[0]):
        nonce, issued = session
        return Access("session", csrf=_session_csrf(app, nonce), session=nonce, session_until=issued + SESSION_MAX_AGE)
    context = await _context_of(request)
    if has_admin_role(context):
        current = request.cookies.get(CSRF_COOKIE, "")
        if len(current) >= 22:
            return Access("role", csrf=current)
        fresh = secrets.token_urlsafe(24)
        return Access("role", csrf=fresh, new_csrf_cookie=fresh)
    identified = context is not None and context.get("identity") is not None
    if token_configured(app):
        # Whoever this is, an admin could still log in here with the token.
        return attrs.evolve(LOGIN_REQUIRED, identified=identified)
    return NOT_ADMIN if identified else NOT_CONFIGURED


def throttled(wait: float) -> Refusal:
    """The refusal while an address waits after wrong tokens."""
    seconds = max(1, math.ceil(wait))
    return Refusal(
        429,
        "TOO_MANY_REQUESTS",
        f"Too many wrong tokens from this address: try again in {seconds} s.",
        retry_after=seconds,
    )


def csrf_ok(request: web.Request, access: Access) -> bool:
    """Whether a state-changing request carries the right CSRF header."""
    if access.via == "bearer":
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or access.csrf is None or access.new_csrf_cookie is not None:
        return False
    return hmac.compare_digest(sent.encode(), access.csrf.encode())


def cookie_path(base: str) -> str:
    return base or "/"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, base: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        path=cookie_path(base),
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        # Behind a TLS-terminating proxy request.secure is False: the proxy's
        # X-Forwarded-Proto says, when server.trust_proxy_headers is on.
        secure=is_https(request),
    )


def clear_cookie(response: web.StreamResponse, name: str, base: str) -> None:
    response.del_cookie(name, path=cookie_path(base), samesite="Strict")


def same_origin(request: web.Request) -> bool:
    """False for a form posted from another site.

    Browsers say where a request comes from in ``Sec-Fetch-Site`` (and in
    ``Origin``, ``null`` when hidden); clients sending neither (curl) pass:
    they carry no ambient cookie a forged form could ride on.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    # Only the host: behind a TLS-terminating proxy the scheme seen here is http.
    return yarl.URL(origin).host_port_subcomponent == yarl.URL(f"http://{request.host}").host_port_subcomponent
