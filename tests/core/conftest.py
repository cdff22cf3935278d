"""Fixtures for the core's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_app(plugboard_app):
    """Build an app from a settings mapping plus plugin objects (the kit's ``plugboard_app``)."""

    def make(data: dict | None = None, plugins=()):
        return plugboard_app(data, plugins=plugins)

    return make
