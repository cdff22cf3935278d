"""Fixtures for the core's tests."""

from __future__ import annotations

import pytest

from plugboard.app import create_app
from plugboard.settings import Settings


@pytest.fixture
def make_app(tmp_path):
    """Build an app from a settings mapping plus plugin objects."""

    def make(data: dict | None = None, plugins=()):
        data = {"plugins": [], **(data or {})}
        data.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
        return create_app(Settings.from_mapping(data, root=tmp_path), plugins=plugins)

    return make
