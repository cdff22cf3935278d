"""Request rate limits: who the client is, the policy, the store call, and the IETF headers.

Owns :class:`RequestLimiter` (one per app, at ``app[LIMITER]``), the
aiohttp middleware that applies it to every HTTP request, WebSocket upgrade
and SSE stream, and the header formatting of
draft-ietf-httpapi-ratelimit-headers (``RateLimit-Policy: "default";q=100;w=900``
and ``RateLimit: "default";r=42;t=30``) plus ``Retry-After`` on a 429.

The client is counted by IP (behind trusted proxies, the forwarded address).
A store failure admits the request with a logged warning, or refuses it with
503 when ``protection.fail_closed`` is set.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.providers.ratelimit import WindowState

logger = logging.getLogger("plugboard.protection")

#: The state of the request's policy, for the response headers.
STATE: web.RequestKey[tuple[str, int, float, WindowState]] = web.RequestKey("plugboard.protection.state")

POLICY = "default"


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
    """``RateLimit-Policy`` for one policy: ``"default";q=100;w=900``."""
    return f'"{name}";q={limit};w={max(math.ceil(window), 1)}'


def ratelimit_header(name: str, state: WindowState) -> str:
    """``RateLimit`` for one policy: ``"default";r=42;t=30``."""
    return f'"{name}";r={state.remaining};t={math.ceil(state.reset_after)}'


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


class RequestLimiter:
    """The default request policy (the seed's ``requests``) over the app's ratelimit store."""

    def __init__(self, app: web.Application, config: Any) -> None:
        self.app = app
        self.config = config
        self.policy = config.requests
        core = app[keys.CORE_CONFIG]
        self.client_address = ClientAddress(config.trusted_proxies, core.server.trust_proxy_headers)
        self.exempt = frozenset(self.policy.exempt_paths)
        self.refusals = 0
        self.store_errors = 0
        self._store: Any = None

    def store(self) -> Any:
        if self._store is None:
            self._store = self.app[keys.SERVICES].get("ratelimit")
        return self._store

    def client_key(self, request: web.Request) -> str:
        return f"ip:{self.client_address(request)}"

    def identity_key(self, context: Any) -> str:
        """Who an operation's cost is charged to: the identity (``user:<repr>``), else the client IP."""
        api_key = getattr(context, "api_key", None)
        if api_key is not None:
            return f"key:{api_key.id}"
        identity = getattr(context, "identity", None)
        if identity is not None:
            ident = getattr(identity, "id", None) or (identity.get("id") if isinstance(identity, dict) else None) or identity
            return f"user:{ident}"
        request = getattr(context, "request", None)
        return self.client_key(request) if request is not None else "ip:unknown"

    async def count(self, key: str, *, cost: int = 1, peek: bool = False, limit: int | None = None, window: float | None = None) -> WindowState | None:
        """Count a hit (or only look) under the default policy (or ``limit``/``window``); None when the store failed and we fail open."""
        store = self.store()
        if store is None:
            return None
        limit = self.policy.max if limit is None else limit
        window = self.policy.window if window is None else window
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

    def headers(self, state: WindowState) -> dict[str, str]:
        return {
            "RateLimit-Policy": policy_header(POLICY, self.policy.max, self.policy.window),
            "RateLimit": ratelimit_header(POLICY, state),
        }

    def refuse(self, state: WindowState) -> web.Response:
        self.refusals += 1
        headers = self.headers(state)
        headers["Retry-After"] = str(max(math.ceil(state.reset_after), 1))
        return web.json_response(
            {"errors": [{"message": "Too many requests; retry later", "extensions": {"code": "RATE_LIMITED", "retryAfter": headers["Retry-After"]}}]},
            status=429,
            headers=headers,
        )


def middleware(limiter: RequestLimiter) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The aiohttp middleware applying the default request policy."""

    skip_failed = limiter.policy.skip_failed_requests

    @web.middleware
    async def rate_limit(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in limiter.exempt or request.method == "OPTIONS":
            return await handler(request)
        key = limiter.client_key(request)
        # skipFailedRequests: look first, count only once the response is known
        # to have succeeded (a moving window cannot give a hit back).
        state = await limiter.count(key, peek=skip_failed)
        if state is not None and not state.allowed:
            return limiter.refuse(state)
        if state is not None:
            request[STATE] = (key, 0, time.monotonic(), state)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            if skip_failed or state is None:
                raise
            for name, value in limiter.headers(state).items():
                e.headers.setdefault(name, value)
            raise
        if skip_failed and state is not None and response.status < 400:
            counted = await limiter.count(key)
            if counted is not None and not response.prepared:
                # Report the state after this request counted.
                for name, value in limiter.headers(counted).items():
                    merge_header(response.headers, name, value)
        return response

    return rate_limit


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Add the RateLimit headers to every response a policy covered, streams included."""
    entry = request.get(STATE)
    if entry is None or f'"{POLICY}";' in response.headers.get("RateLimit", ""):
        return
    limiter = request.app[LIMITER]
    for name, value in limiter.headers(entry[3]).items():
        merge_header(response.headers, name, value)


LIMITER: web.AppKey[RequestLimiter] = web.AppKey("plugboard.protection.limiter", RequestLimiter)
