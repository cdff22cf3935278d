"""Fixtures for the email plugin's tests (helpers: ``email_testkit``).

``make_email_app(data, plugins=...)`` builds an app (email alone unless
``plugins`` says otherwise) with records in a SQLite file under tmp_path;
``start_app`` runs its start-up; ``client_for`` serves it. ``smtp_server`` is
a real aiosmtpd (``smtp_factory(tls=, auth=)`` for STARTTLS and AUTH),
``tls_files`` a locally generated CA and a localhost certificate.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from email_testkit import SmtpHandler, SmtpServer, TlsFiles, authenticator, email_settings, make_cert

from plugboard.app import create_app
from plugboard.settings import Settings
from plugboard.testing_servers import free_port


@pytest.fixture
def make_email_app(tmp_path):
    def make(data: dict | None = None, plugins: list[str] | None = None, extra=()):
        return create_app(Settings.from_mapping(email_settings(tmp_path, data, plugins), root=tmp_path), plugins=list(extra))

    return make


@pytest.fixture
async def start_app():
    runners = []

    async def start(app):
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        return app

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def client_for(aiohttp_client):
    async def make(app):
        return await aiohttp_client(app)

    return make


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TlsFiles:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    d = tmp_path_factory.mktemp("tls")
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_cert("Plugboard test CA", None, None, ca_key, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_cert("localhost", ca_key, ca.subject, key, ca=False, sans=["localhost", "127.0.0.1"])
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return TlsFiles(d / "ca.pem", d / "cert.pem", d / "key.pem", ca_key)


@pytest.fixture
def smtp_factory(tls_files):
    from aiosmtpd.controller import Controller

    controllers = []

    def make(*, tls: bool = False, auth: bool = False) -> SmtpServer:
        handler = SmtpHandler()
        port = free_port()
        kwargs: dict[str, Any] = {}
        if tls:
            kwargs["tls_context"] = tls_files.server_context()
            kwargs["require_starttls"] = False
        if auth:
            kwargs["authenticator"] = authenticator
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = tls
        controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="localhost", **kwargs)
        controller.start()
        controllers.append(controller)
        return SmtpServer("127.0.0.1", port, handler)

    yield make
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_server(smtp_factory) -> SmtpServer:
    return smtp_factory()
