"""A per-IP throttle on failed authentication (``protection.auth_failures``).

Guessing credentials — API keys, bearer tokens, ``server.admin_token`` at
the inspect endpoint or ``/metrics`` — costs a client one failure each: a
``401`` answer to an HTTP request that carried credentials
(``Authorization`` or ``X-API-Key``), or a WebSocket ``connection_init``
whose credentials were refused. Once an address has ``max`` failures in the
window, its requests that carry credentials are refused before they are
checked: HTTP ``429`` with ``Retry-After`` and ``extensions.code:
TOO_MANY_REQUESTS`` (``reason: "auth_failures"``; the core's code for 429 and
WebSocket close 4429), a WebSocket closed with 4429. Requests without
credentials pass, so a throttled address can still browse anonymously.

Counted in the ratelimit service (shared by every instance with Redis), by
client IP as the request limits see it (trusted proxies honoured).

Not covered: a wrong admin token sent to a GraphQL operation (the jobs
mutations) is not a failure anyone can see — the core reads it as anonymous
and the resolver answers ``FORBIDDEN`` in a 200; those guesses are only
bounded by the request limits.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable

from aiohttp import web

from plugboard.graphql.errors import GraphQLError

CODE = "TOO_MANY_REQUESTS"


def _credentials(request: web.Request | None, connection_params: Any = None) -> bool:
    if connection_params and any(k in connection_params for k in ("authorization", "Authorization", "apiKey", "x-api-key")):
        return True
    return request is not None and ("Authorization" in request.headers or "X-API-Key" in request.headers)


class AuthFailures:
    """Failed authentications per client IP, in the app's ratelimit store."""

    def __init__(self, limiter: Any, config: Any) -> None:
        self.limiter = limiter
        self.max = config.max
        self.window = config.window
        self.refusals = 0

    def key(self, request: web.Request) -> str:
        return f"authfail:{self.limiter.client_key(request)}"

    async def blocked(self, request: web.Request) -> int | None:
        """Seconds to wait when this address has used up its failures, else None."""
        state = await self.limiter.count(self.key(request), peek=True, limit=self.max, window=self.window)
        if state is None or state.remaining > 0:
            return None
        self.refusals += 1
        return max(math.ceil(state.reset_after), 1)

    async def failed(self, request: web.Request) -> None:
        await self.limiter.count(self.key(request), limit=self.max, window=self.window)

    def error(self, retry: int) -> GraphQLError:
        return GraphQLError(
            f"Too many failed authentication attempts from this address; retry in {retry}s",
            CODE,
            extensions={"reason": "auth_failures", "retryAfter": retry},
            headers={"Retry-After": str(retry)},
        )

    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """One HTTP request that carries credentials: refused when its address is blocked, a 401 counted."""
        retry = await self.blocked(request)
        if retry is not None:
            error = self.error(retry)
            return web.json_response({"errors": [error.formatted()]}, status=429, headers=error.headers)
        try:
            response = await handler(request)
        except web.HTTPUnauthorized:
            await self.failed(request)
            raise
        if response.status == 401:
            await self.failed(request)
        return response

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """HTTP, when the request limits are off (else their middleware calls :meth:`guard`)."""

        @web.middleware
        async def auth_failures(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            if not _credentials(request) or request.method == "OPTIONS":
                return await handler(request)
            return await self.guard(request, handler)

        return auth_failures

    async def websocket(self, request: web.Request, connection_params: Any, authenticate: Awaitable[Any]) -> Any:
        """A WebSocket ``connection_init``: refuse when blocked, count a refused one (HTTP is the middleware's)."""
        if not _credentials(None, connection_params):
            return await authenticate
        retry = await self.blocked(request)
        if retry is not None:
            authenticate.close()  # type: ignore[attr-defined]  # never awaited: the coroutine is dropped
            raise self.error(retry)
        try:
            return await authenticate
        except GraphQLError as e:
            if e.code == "UNAUTHENTICATED":
                await self.failed(request)
            raise


AUTH_FAILURES: web.AppKey[AuthFailures] = web.AppKey("plugboard.protection.auth_failures", AuthFailures)
