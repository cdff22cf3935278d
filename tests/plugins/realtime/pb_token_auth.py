"""A stand-in authentication plugin for the real-time tests (a module, so
subprocess servers can load it by dotted path with this folder on PYTHONPATH).

``Authorization: Bearer <user>`` (HTTP, SSE) or ``connection_init`` payload
``{"authToken": "<user>"}`` (WebSocket) makes ``context.identity`` the user
id. ``<user>@<unix-seconds>`` also sets ``context.identity_expires_at``;
``bad`` is rejected as UNAUTHENTICATED, ``banned`` as FORBIDDEN.
"""

from __future__ import annotations

from typing import Any

from plugboard import hookimpl
from plugboard.graphql.errors import GraphQLError


def identity_values(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    if token == "bad":
        raise GraphQLError("invalid token", "UNAUTHENTICATED")
    if token == "banned":
        raise GraphQLError("this account is banned", "FORBIDDEN")
    user, _, exp = token.partition("@")
    values: dict[str, Any] = {"identity": user}
    if exp:
        values["identity_expires_at"] = float(exp)
    return values


@hookimpl
def plugboard_context(context: Any, request: Any, connection_params: Any) -> dict[str, Any] | None:
    token = None
    if connection_params and isinstance(connection_params.get("authToken"), str):
        token = connection_params["authToken"]
    elif request is not None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:]
    return identity_values(token)
