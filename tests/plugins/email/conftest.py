"""Fixtures for the email plugin's tests.

``make_email_app(data, plugins=...)`` builds an app (email alone unless
``plugins`` says otherwise) with records in a SQLite file under tmp_path;
``start_app`` runs its start-up; ``gql`` posts GraphQL as the admin (or not).
``smtp_server`` is a real aiosmtpd (optionally STARTTLS + AUTH), ``tls_files``
a locally generated CA and a localhost certificate.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web

from plugboard.app import create_app
from plugboard.settings import Settings
from plugboard.testing_servers import free_port

ADMIN = "admin-token-for-tests"


def email_settings(tmp_path: Path, data: dict | None = None, plugins: list[str] | None = None) -> dict:
    data = dict(data or {})
    data.setdefault("plugins", plugins or ["email"])
    server = data.setdefault("server", {})
    server.setdefault("data_dir", str(tmp_path / "var"))
    server.setdefault("admin_token", ADMIN)
    server.setdefault("secret_key", "test-secret")
    if "jobs" in data["plugins"]:
        data.setdefault("jobs", {}).setdefault("schedules", [])
    return data


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


async def gql(client, query: str, variables: dict | None = None, *, admin: bool = True) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"} if admin else {}
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    return await response.json()


def outbox(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "var" / "outbox").glob("*.eml"), key=lambda p: (p.stat().st_mtime, p.name))


# -- TLS material ------------------------------------------------------------------------


@attrs.define
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path
    ca_key: Any

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_cert(subject_cn: str, issuer_key: Any, issuer_name: Any, key: Any, *, ca: bool, sans: list[str] = ()) -> Any:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        entries = []
        for s in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                entries.append(x509.DNSName(s))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


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


# -- SMTP ----------------------------------------------------------------------------------


@attrs.define
class SmtpServer:
    host: str
    port: int
    handler: Any


class _Handler:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.delay = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.partition("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 no such user here"
        if local.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        import email
        import email.policy

        if self.delay:
            await asyncio.sleep(self.delay)
        raw = envelope.original_content or envelope.content
        self.raw.append(raw)
        self.messages.append({
            "from": envelope.mail_from, "to": list(envelope.rcpt_tos), "tls": session.ssl is not None,
            "auth": session.authenticated, "message": email.message_from_bytes(raw, policy=email.policy.default),
        })
        return "250 Message accepted for delivery"


def _authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)


@pytest.fixture
def smtp_factory(tls_files):
    from aiosmtpd.controller import Controller

    controllers = []

    def make(*, tls: bool = False, auth: bool = False) -> SmtpServer:
        handler = _Handler()
        port = free_port()
        kwargs: dict[str, Any] = {}
        if tls:
            kwargs["tls_context"] = tls_files.server_context()
            kwargs["require_starttls"] = False
        if auth:
            kwargs["authenticator"] = _authenticator
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
