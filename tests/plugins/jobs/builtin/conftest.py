"""Fixtures for the built-in job types' tests (helpers are in builtin_testkit).

``make_builtin_app`` builds an app (books plugin optional) whose built-in tasks come from
``builtin_tasks`` with the given settings. The SMTP server is the test kit's
``smtp_server`` (``reject…@`` recipients get 550, ``busy…@`` get 451).
"""

from __future__ import annotations

import pytest

from plugboard.plugins.jobs.builtin import builtin_tasks

from builtin_testkit import builtin_config


@pytest.fixture
def make_builtin_app(plugboard_app):
    """``make_builtin_app(settings_mapping, books=True)`` -> (app, tasks) — app not started."""

    def make(data: dict | None = None, *, books: bool = False, jobs: dict | None = None, plugins=()):
        data = {"plugins": ["books"] if books else [], **(data or {})}
        if "books" in data["plugins"]:
            # These tests fill the books table anonymously; books' mutations
            # need an identity by default.
            data.setdefault("books", {"allow_anonymous_mutations": True})
        return plugboard_app(data, plugins=list(plugins)), builtin_tasks(builtin_config(jobs))

    return make
