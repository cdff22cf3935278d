"""Fixtures for the built-in job types' tests (helpers are in builtin_testkit).

``make_builtin_app`` builds an app (books plugin optional) whose built-in tasks come from
``builtin_tasks`` with the given settings; ``smtp_server`` is a real aiosmtpd
server on a free loopback port that refuses some recipients.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from plugboard.app import create_app
from plugboard.plugins.jobs.builtin import builtin_tasks
from plugboard.settings import Settings
from plugboard.testing_servers import free_port

from builtin_testkit import builtin_config


@pytest.fixture
def make_builtin_app(tmp_path):
    """``make_builtin_app(settings_mapping, books=True)`` -> (app, tasks) — app not started."""

    def make(data: dict | None = None, *, books: bool = False, jobs: dict | None = None, plugins=()):
        data = dict(data or {})
        data.setdefault("plugins", ["books"] if books else [])
        data.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
        if "books" in data["plugins"]:
            # These tests fill the books table anonymously; books' mutations
            # need an identity by default.
            data.setdefault("books", {"allow_anonymous_mutations": True})
        app = create_app(Settings.from_mapping(data, root=tmp_path), plugins=list(plugins))
        return app, builtin_tasks(builtin_config(jobs))

    return make


@attrs.define
class SmtpServer:
    host: str
    port: int
    handler: Any

    @property
    def messages(self) -> list[Any]:
        return self.handler.messages


class _Handler:
    """Accepts mail; ``reject*@`` recipients get 550, ``busy*@`` get 451."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.partition("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 no such user here"
        if local.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import email
        import email.policy

        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "message": email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default),
            }
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    handler = _Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()
