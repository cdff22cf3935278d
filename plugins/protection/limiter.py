"""Request rate limits: who the client is, which policy counts it, the store call, and the IETF headers.

Owns :class:`RequestLimiter` (one per app, at ``app[LIMITER]``) and the
aiohttp middleware that applies it to every HTTP request, WebSocket upgrade
and SSE stream, with the headers of draft-ietf-httpapi-ratelimit-headers
(``RateLimit-Policy: "ip";q=100;w=900`` and ``RateLimit: "ip";r=42;t=30``)
plus ``Retry-After`` on a 429.

Each request counts once, under its most specific verified identity: API
key, else user, else client IP. The identity is only known once the
context is built (an API key looked up, a JWT verified), so:

- a request without credentials counts against its IP here, before any
  work, and is refused here;
- a request with credentials (``Authorization``, ``X-API-Key``) is counted
  by the operation step (:mod:`.operations`) under its identity; here it is
  only refused up front when its IP's policy is already spent, and counted
  against the IP afterwards when no identity counted it (bad credentials,
  a route without GraphQL) — so a flood of forged tokens is still limited;
- a WebSocket upgrade is a new connection and counts against the IP; over
  the limit the upgrade is accepted and closed at once with 4429 (a browser
  cannot read a refused handshake's status; graphql-ws clients read close
  codes). Operations on the socket count in the operation step.

A store failure admits the request with a logged warning, or refuses it
with 503 when ``protection.fail_closed`` is set.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs
from aiohttp import hdrs, web

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.graphql.errors import GraphQLError
from plugboard.providers.ratelimit import WindowState

if TYPE_CHECKING:
    from plugboard.plugins.protection.authfail import AuthFailures

logger = logging.getLogger("plugboard.protection")

#: The policy that counted the request and its state, for the response headers.
STATE: web.RequestKey[tuple["Policy", WindowState]] = web.RequestKey("plugboard.protection.state")
#: Set when the request carries credentials: the operation step counts it under its identity.
DEFERRED: web.RequestKey[bool] = web.RequestKey("plugboard.protection.deferred")

#: WebSocket close code for a connection refused by a rate limit (graphql-ws' TooManyInitialisationRequests).
CLOSE_RATE_LIMITED = 4429


def merge_header(headers: Any, name: str, value: str) -> None:
    """Add one policy's item to a List structured header (``RateLimit``/``RateLimit-Policy``), keeping others' items."""
    current = headers.get(name)
    if not current:
        headers[name] = value
        return
    label = value.split(";", 1)[0]
    items = [item.strip() for item in current.split(",") if item.strip() and item.strip().split(";", 1)[0] != label]
    headers[name] = ", ".join([value, *items])


def policy_header(name: str, limit: int, window: float) -> str:
    """``RateLimit-Policy`` for one policy: ``"ip";q=100;w=900``."""
    return f'"{name}";q={limit};w={max(math.ceil(window), 1)}'


def ratelimit_header(name: str, state: WindowState) -> str:
    """``RateLimit`` for one policy: ``"ip";r=42;t=30``."""
    return f'"{name}";r={state.remaining};t={math.ceil(state.reset_after)}'


def retry_after(state: WindowState) -> int:
    return max(math.ceil(state.reset_after), 1)


@attrs.frozen
class Policy:
    """A named limit: ``max`` hits per ``window`` seconds; ``name`` labels its header items."""

    name: str
    max: int
    window: float
    #: Its ``RateLimit-Policy`` item, made once.
    header: str = attrs.field(init=False)

    @header.default
    def _header(self) -> str:
        return policy_header(self.name, self.max, self.window)

    def headers(self, state: WindowState) -> dict[str, str]:
        return {"RateLimit-Policy": self.header, "RateLimit": ratelimit_header(self.name, state)}


def _policy(name: str, options: Any, default: Any) -> Policy:
    window_ms = options.window_ms if options.window_ms is not None else default.window_ms
    return Policy(name, options.max if options.max is not None else default.max, window_ms / 1000.0)


class ClientAddress:
    """The client's IP: the peer, or the nearest untrusted hop of ``X-Forwarded-For`` when the peer is a trusted proxy."""

    def __init__(self, trusted: list[str], trust_all_headers: bool) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in trusted]
        self._trust_last_hop = trust_all_headers and not self._networks

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in self._networks)

    def __call__(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded:
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if self._trust_last_hop:
            # The core's trust_proxy_headers: one proxy in front, which appends the client last.
            return hops[-1] if hops else peer
        if not self._trusted(peer):
            # A client claiming to be someone else: the header is ignored.
            return peer
        # Right to left: the first hop not a trusted proxy is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer


def identity_id(context: Any) -> str | None:
    """The context's user id (a JWT's ``sub``, an API key's owner), or None when anonymous."""
    identity = getattr(context, "identity", None)
    if identity is None:
        return None
    if isinstance(identity, dict):
        found = identity.get("id")
    else:
        found = getattr(identity, "id", None)
    return str(found if found is not None else identity)


class RequestLimiter:
    """The request policies (the seed's ``requests`` per IP, ``per_user``, ``per_key``) over the app's ratelimit store."""

    def __init__(self, app: web.Application, config: Any) -> None:
        self.app = app
        self.config = config
        requests = config.requests
        self.policy = self.ip = Policy("ip", requests.max, requests.window)
        self.user = _policy("user", requests.per_user, requests)
        self.key = _policy("key", requests.per_key, requests)
        self.key_overrides = {name: _policy("key", options, _KeyDefault(self.key)) for name, options in requests.key_overrides.items()}
        self._own_policies: dict[tuple[int, float], Policy] = {}
        core = app[keys.CORE_CONFIG]
        self.client_address = ClientAddress(config.trusted_proxies, core.server.trust_proxy_headers)
        self.exempt = frozenset(requests.exempt_paths)
        self.refusals = 0
        self.store_errors = 0
        self._store: Any = None
        #: The store's synchronous ``hit_now`` when it counts in this process (memory), else None.
        self.hit_now: Callable[..., WindowState] | None = None

    def use_store(self, store: Any) -> None:
        """Count in ``store`` (the app's ratelimit service)."""
        self._store = store
        self.hit_now = getattr(store, "hit_now", None)

    def store(self) -> Any:
        if self._store is None:
            self.use_store(self.app[keys.SERVICES].get("ratelimit"))
        return self._store

    def client_key(self, request: web.Request) -> str:
        return f"ip:{self.client_address(request)}"

    def key_policy(self, api_key: Any) -> Policy:
        """The policy of one API key: its record's own limit, else its settings override (by prefix or id), else ``per_key``."""
        own = api_key.limits.rate_limit_max
        if own is not None:
            window_ms = api_key.limits.rate_limit_window_ms
            return self._own_policy(own, window_ms / 1000.0 if window_ms else self.key.window)
        if self.key_overrides:
            found = self.key_overrides.get(api_key.prefix) or self.key_overrides.get(api_key.id)
            if found is not None:
                return found
        return self.key

    def _own_policy(self, most: int, window: float) -> Policy:
        # Policies are reused (their header is built once); keys share few distinct limits.
        found = self._own_policies.get((most, window))
        if found is None:
            if len(self._own_policies) > 1024:
                self._own_policies.clear()
            found = self._own_policies[(most, window)] = Policy("key", most, window)
        return found

    def subject(self, context: Any) -> tuple[Policy, str]:
        """The policy an operation counts under and its counter: API key, else user, else client IP."""
        api_key = getattr(context, "api_key", None)
        if api_key is not None:
            return self.key_policy(api_key), f"key:{api_key.id}"
        user = identity_id(context)
        if user is not None:
            return self.user, f"user:{user}"
        request = getattr(context, "request", None)
        return self.ip, (self.client_key(request) if request is not None else "ip:unknown")

    def identity_key(self, context: Any) -> str:
        """Who an operation's cost is charged to: ``key:<id>``, ``user:<id>``, else the client IP."""
        return self.subject(context)[1]

    async def count(self, key: str, *, cost: int = 1, peek: bool = False, limit: int | None = None, window: float | None = None) -> WindowState | None:
        """Count a hit (or only look) under ``limit``/``window`` (default: the IP policy); None when the store failed and we fail open."""
        store = self.store()
        if store is None:
            return None
        limit = self.ip.max if limit is None else limit
        window = self.ip.window if window is None else window
        try:
            if peek:
                return await store.peek(key, limit=limit, window=window)
            return await store.hit(key, limit=limit, window=window, cost=cost)
        except (ProviderError, OSError) as e:
            self.store_errors += 1
            logger.warning("protection: the ratelimit store failed (%s); %s", e, "refusing" if self.config.fail_closed else "admitting")
            if self.config.fail_closed:
                raise web.HTTPServiceUnavailable(text="rate limit store unavailable", headers={"Retry-After": "1"}) from e
            return None

    async def count_operation(self, key: str, policy: Policy, *, cost: int = 1) -> WindowState | None:
        """:meth:`count` inside an operation: fail_closed answers in the transport's form (a GraphQL error), not an aiohttp 503."""
        try:
            return await self.count(key, cost=cost, limit=policy.max, window=policy.window)
        except web.HTTPServiceUnavailable:
            raise GraphQLError("the rate limit store is unavailable; retry later", "SERVICE_UNAVAILABLE", headers={"Retry-After": "1"}) from None

    def refused(self, policy: Policy, state: WindowState, message: str = "Too many requests; retry later", **extensions: Any) -> GraphQLError:
        """The GraphQL error for a refusal: ``RATE_LIMITED``, and a 429 with the headers when it refuses a whole request."""
        self.refusals += 1
        seconds = retry_after(state)
        return GraphQLError(
            message,
            "RATE_LIMITED",
            extensions={"policy": policy.name, **extensions, "retryAfter": seconds},
            headers={**policy.headers(state), "Retry-After": str(seconds)},
        )

    def refuse(self, policy: Policy, state: WindowState) -> web.Response:
        error = self.refused(policy, state)
        return web.json_response({"errors": [error.formatted()]}, status=429, headers=error.headers)

    async def refuse_websocket(self, request: web.Request, policy: Policy, state: WindowState) -> web.WebSocketResponse:
        """Accept the upgrade and close at once with 4429 and the wait in the reason."""
        self.refusals += 1
        offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",") if p.strip()]
        # Echo an offered subprotocol: a client refuses a handshake without one it asked for.
        ws = web.WebSocketResponse(protocols=offered[:1])
        seconds = retry_after(state)
        ws.headers.update(policy.headers(state))
        ws.headers["Retry-After"] = str(seconds)
        await ws.prepare(request)
        await ws.close(code=CLOSE_RATE_LIMITED, message=f"Too many requests; retry in {seconds}s".encode())
        return ws


class _KeyDefault:
    """The key policy's window and max, as the default an override falls back on."""

    def __init__(self, policy: Policy) -> None:
        self.window_ms = policy.window * 1000
        self.max = policy.max


def has_credentials(request: web.Request) -> bool:
    headers = request.headers
    return hdrs.AUTHORIZATION in headers or "X-API-Key" in headers


def _is_upgrade(request: web.Request) -> bool:
    return "websocket" in request.headers.get(hdrs.UPGRADE, "").lower()


def middleware(limiter: RequestLimiter, auth_failures: "AuthFailures | None" = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The aiohttp middleware applying the IP policy (and deferring identified requests to the operation step).

    ``auth_failures`` (an :class:`~.authfail.AuthFailures`) guards requests
    that carry credentials here, inside the IP's limit, rather than in a
    middleware of its own that every request would pass through.
    """

    skip_failed = limiter.config.requests.skip_failed_requests
    ip = limiter.ip

    async def counted(request: web.Request, handler: Any, key: str, state: WindowState | None) -> web.StreamResponse:
        if state is not None:
            request[STATE] = (ip, state)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            entry = request.get(STATE)
            if not skip_failed and entry is not None:
                for name, value in entry[0].headers(entry[1]).items():
                    e.headers.setdefault(name, value)
            raise
        if skip_failed and response.status < 400:
            # skipFailedRequests: counted only once the response is known to have succeeded.
            state = await limiter.count(key)
            if state is not None:
                request[STATE] = (ip, state)
                if not response.prepared:
                    for name, value in ip.headers(state).items():
                        merge_header(response.headers, name, value)
        return response

    async def limited(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        key = limiter.client_key(request)
        if _is_upgrade(request):
            # A new connection: per address, whoever it claims to be.
            state = await limiter.count(key)
            if state is not None and not state.allowed:
                return await limiter.refuse_websocket(request, ip, state)
            return await counted(request, handler, key, None)
        if has_credentials(request):
            state = await limiter.count(key, peek=True)
            if state is not None and not state.allowed:
                return limiter.refuse(ip, state)
            request[DEFERRED] = True
            failed = True
            try:
                response = await (handler(request) if auth_failures is None else auth_failures.guard(request, handler))
                failed = response.status >= 400
                return response
            finally:
                if STATE not in request and not (skip_failed and failed):
                    # No identity counted it (refused credentials, no operation).
                    await limiter.count(key)
        # Without credentials: the IP's policy, before any work (with
        # skipFailedRequests, only a look; the count waits for the outcome).
        state = await limiter.count(key, peek=skip_failed)
        if state is not None and not state.allowed:
            return limiter.refuse(ip, state)
        if skip_failed or state is None:
            return await counted(request, handler, key, state)
        # The headers go on in on_response_prepare, HTTP errors' included.
        request[STATE] = (ip, state)
        return await handler(request)

    # A plain function: on the usual path (a request without credentials, a
    # store that counts in this process) it counts and hands back the
    # handler's coroutine instead of awaiting it, so no coroutine of ours sits
    # under every await of the request. Everything else goes to limited().
    @web.middleware
    def rate_limit(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Awaitable[web.StreamResponse]:
        if request.path in limiter.exempt or request.method == "OPTIONS":
            return handler(request)
        hit_now = limiter.hit_now
        if hit_now is None or skip_failed or has_credentials(request) or _is_upgrade(request):
            return limited(request, handler)
        state = hit_now(limiter.client_key(request), limit=ip.max, window=ip.window)
        if not state.allowed:
            return _answer(limiter.refuse(ip, state))
        request[STATE] = (ip, state)
        return handler(request)

    return rate_limit


async def _answer(response: web.StreamResponse) -> web.StreamResponse:
    return response


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Add the RateLimit headers to every response a policy covered, streams included."""
    entry = request.get(STATE)
    if entry is None:
        return
    policy, state = entry
    headers = response.headers
    current = headers.get("RateLimit-Policy")
    if current is None:
        # The usual case: this policy's items only.
        headers["RateLimit-Policy"] = policy.header
        headers["RateLimit"] = ratelimit_header(policy.name, state)
        return
    if policy.header in current:
        return
    merge_header(headers, "RateLimit-Policy", policy.header)
    merge_header(headers, "RateLimit", ratelimit_header(policy.name, state))


LIMITER: web.AppKey[RequestLimiter] = web.AppKey("plugboard.protection.limiter", RequestLimiter)
