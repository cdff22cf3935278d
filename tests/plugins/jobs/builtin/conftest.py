"""Fixtures for the built-in job types' tests (helpers are in builtin_testkit).

``make_builtin_app`` builds an app (books plugin optional) whose built-in tasks come from
``builtin_tasks`` with the given settings. The SMTP server is the test kit's
``smtp_server`` (``reject…@`` recipients get 550, ``busy…@`` get 451).
"""

from __future__ import annotations

import pytest

from plugboard import hookimpl
from plugboard.plugins.jobs.builtin.mailers import PROVIDER_SPECS
from plugboard.plugins.jobs.builtin import builtin_tasks

from builtin_testkit import builtin_config


class MailerProviders:
    """Declares the mailer providers, as the jobs plugin does, for apps built without it."""

    @hookimpl
    def plugboard_providers(self) -> list:
        return list(PROVIDER_SPECS)


@pytest.fixture
def make_builtin_app(plugboard_app):
    """``make_builtin_app(settings_mapping, books=True)`` -> (app, tasks) — app not started."""

    def make(data: dict | None = None, *, books: bool = False, jobs: dict | None = None, plugins=()):
        data = {"plugins": ["books"] if books else [], **(data or {})}
        extra = list(plugins) if "jobs" in data["plugins"] else [MailerProviders(), *plugins]
        return plugboard_app(data, plugins=extra), builtin_tasks(builtin_config(jobs))

    return make
