"""Who is an admin: the operator's token, or an identity holding the ``admin`` role.

Auth plugins put roles on the context as ``context.roles`` (any iterable of
strings); the operator's token is ``server.admin_token``, sent as
``Authorization: Bearer <token>`` (HTTP, SSE, the WebSocket upgrade) or as
``{"authorization": "Bearer <token>"}`` in a WebSocket ``connection_init``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Mapping

from aiohttp import web

from plugboard import keys

if TYPE_CHECKING:
    from plugboard.graphql.context import Context


def bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def is_admin_token(app: web.Application, token: str | None) -> bool:
    """True when ``token`` is the configured admin token (compared in constant time)."""
    configured = app[keys.CORE_CONFIG].server.admin_token
    if not configured or not token:
        return False
    return hmac.compare_digest(str(configured).encode(), token.encode())


def has_admin_role(context: "Context | None") -> bool:
    roles = context.roles if context is not None else ()
    return bool(roles) and "admin" in roles


def is_admin(context: Any, connection_params: Mapping[str, Any] | None = None) -> bool:
    """The GraphQL check: admin role on the context, or the admin token on the request."""
    if has_admin_role(context):
        return True
    app = context.app
    request = context.get("request")
    if request is not None and is_admin_token(app, bearer(request.headers.get("Authorization"))):
        return True
    params = connection_params if connection_params is not None else context.get("connection_params")
    if isinstance(params, Mapping):
        value = params.get("authorization")
        if isinstance(value, str) and is_admin_token(app, bearer(value)):
            return True
    return False
