"""Shared fixtures for the real-time plugin's tests.

``token_auth`` stands in for real authentication until the protection issue:
``Authorization: Bearer <user>`` (HTTP, SSE) or ``connection_init`` payload
``{"authToken": "<user>"}`` (WebSocket) makes ``context.identity`` the user
id. A token ``<user>@<unix-seconds>`` also sets ``context.identity_expires_at``;
``bad`` is rejected as UNAUTHENTICATED, ``banned`` as FORBIDDEN.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from plugboard import hookimpl
from plugboard.app import create_app
from plugboard.graphql.errors import GraphQLError
from plugboard.settings import Settings


def _identity(token: str | None) -> dict[str, Any] | None:
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


def token_auth_plugin() -> types.SimpleNamespace:
    def plugboard_context(context, request, connection_params):
        token = None
        if connection_params and isinstance(connection_params.get("authToken"), str):
            token = connection_params["authToken"]
        elif request is not None:
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[7:]
        return _identity(token)

    plugin = types.SimpleNamespace(plugboard_name="token_auth", __name__="token_auth")
    plugin.plugboard_context = hookimpl(plugboard_context)
    return plugin


@pytest.fixture
def token_auth():
    return token_auth_plugin()


@pytest.fixture
def make_realtime_app(tmp_path):
    """``make_realtime_app({"realtime": {...}}, plugins=[...])`` -> a web.Application with realtime enabled."""

    def make(data: dict | None = None, plugins=(), *, auth: bool = True):
        data = dict(data or {})
        data.setdefault("plugins", ["realtime"])
        data.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
        extra = [token_auth_plugin(), *plugins] if auth else list(plugins)
        return create_app(Settings.from_mapping(data, root=tmp_path), plugins=extra)

    return make
