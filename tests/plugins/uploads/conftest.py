"""Fixtures for the uploads plugin's tests: ``uploads_client(uploads=None, **sections)`` -> a started client."""

from __future__ import annotations

import pytest

from uploads_kit import auth_plugin, settings


@pytest.fixture
async def uploads_client(plugboard_client):
    async def make(uploads: dict | None = None, **sections):
        return await plugboard_client(settings(uploads, **sections), plugins=[auth_plugin()])

    return make
