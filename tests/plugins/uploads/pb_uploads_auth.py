"""A test-only identity plugin for subprocess servers: ``Bearer <user>`` -> ``context.identity``."""

from __future__ import annotations

from plugboard import hookimpl


@hookimpl
def plugboard_context(context, request, connection_params):
    value = None
    if connection_params and isinstance(connection_params.get("authorization"), str):
        value = connection_params["authorization"]
    elif request is not None:
        value = request.headers.get("Authorization")
    if not value or not value.startswith("Bearer "):
        return None
    user = value[7:]
    return {"identity": user, "roles": ["admin"] if user == "root" else []}
