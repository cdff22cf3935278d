"""Shared fixtures for the real-time plugin's tests.

``token_auth`` stands in for real authentication until the protection issue:
``Authorization: Bearer <user>`` (HTTP, SSE) or ``connection_init`` payload
``{"authToken": "<user>"}`` (WebSocket) makes ``context.identity`` the user
id. A token ``<user>@<unix-seconds>`` also sets ``context.identity_expires_at``;
``bad`` is rejected as UNAUTHENTICATED, ``banned`` as FORBIDDEN. The plugin
itself is the module ``pb_token_auth`` beside this file.
"""

from __future__ import annotations

import types

import pytest


def token_auth_plugin() -> types.ModuleType:
    """The stand-in auth plugin (see pb_token_auth)."""
    import pb_token_auth

    return pb_token_auth


@pytest.fixture
def token_auth():
    return token_auth_plugin()


@pytest.fixture
def make_realtime_app(plugboard_app):
    """``make_realtime_app({"realtime": {...}}, plugins=[...])`` -> a web.Application with realtime enabled."""

    def make(data: dict | None = None, plugins=(), *, auth: bool = True):
        data = {"plugins": ["realtime"], **(data or {})}
        extra = [token_auth_plugin(), *plugins] if auth else list(plugins)
        return plugboard_app(data, plugins=extra)

    return make
