"""Errors meant for GraphQL clients.

Raise :class:`GraphQLError` from a resolver, a context hook or an operation
step when the client should see the message. Any other exception is a bug:
clients get ``Internal server error`` (unless ``server.debug``) and the log
gets the traceback with the request id and the owning plugin.
"""

from __future__ import annotations

from typing import Any, Mapping

#: HTTP statuses and WebSocket close codes for codes that reject a whole request.
HTTP_STATUS_FOR_CODE = {
    "BAD_REQUEST": 400,
    "BAD_USER_INPUT": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "PAYLOAD_TOO_LARGE": 413,
    "TOO_MANY_REQUESTS": 429,
    "RATE_LIMITED": 429,
}
WS_CLOSE_FOR_CODE = {
    "BAD_REQUEST": 4400,
    "UNAUTHENTICATED": 4401,
    "FORBIDDEN": 4403,
    "TOO_MANY_REQUESTS": 4429,
    "RATE_LIMITED": 4429,
}


class GraphQLError(Exception):
    """An error whose message is shown to clients, with ``extensions.code``."""

    def __init__(
        self,
        message: str,
        code: str = "BAD_REQUEST",
        *,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extensions = {"code": code, **(extensions or {})}
        #: Extra HTTP headers when this error rejects a whole request (Retry-After ...).
        self.headers = dict(headers or {})

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_FOR_CODE.get(self.code, 400)

    def formatted(self) -> dict[str, Any]:
        return {"message": self.message, "extensions": dict(self.extensions)}
