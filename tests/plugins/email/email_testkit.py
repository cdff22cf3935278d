"""Helpers shared by the email plugin's tests (a module of its own: test files import it by name).

``email_settings`` builds app settings, ``gql`` posts GraphQL as the admin (or
not), ``outbox`` lists the outbox's files, ``make_cert`` makes certificates
under a local CA, ``SmtpHandler`` is the aiosmtpd handler the ``smtp_*``
fixtures run, ``wait_job`` waits for a job, ``events`` reads the recorded
email events, ``VARIABLES`` are variables for every built-in template.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from plugboard import keys

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


async def gql(client, query: str, variables: dict | None = None, *, admin: bool = True) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"} if admin else {}
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    return await response.json()


def outbox(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "var" / "outbox").glob("*.eml"), key=lambda p: (p.stat().st_mtime, p.name))


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
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    # What Python 3.13's default context (VERIFY_X509_STRICT) requires of a chain.
    signer = issuer_key or key
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    usage = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )
    if ca:
        usage.update(key_cert_sign=True, crl_sign=True, digital_signature=True)
    else:
        usage.update(digital_signature=True, key_encipherment=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    if sans:
        entries = []
        for s in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                entries.append(x509.DNSName(s))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@attrs.define
class SmtpServer:
    host: str
    port: int
    handler: Any


class SmtpHandler:
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


def authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)



async def wait_job(app, job_id: str, statuses=None, timeout: float = 10.0):
    from plugboard.plugins.jobs.keys import JOBS
    from plugboard.plugins.jobs.model import JobStatus

    statuses = statuses or (JobStatus.COMPLETED, JobStatus.FAILED)
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = await app[JOBS].get(job_id)
        if job is not None and job.status in statuses:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} is {job.status if job else None}")


async def events(app) -> list:
    from plugboard.plugins.email import store

    table = store.table(app, "events")
    async with app[keys.RECORDS].connect() as conn:
        return list((await conn.execute(sa.select(table).order_by(table.c.id))).all())


VARIABLES = {
    "welcome": {"username": "Ann", "activationLink": "https://app.example.com/activate/t0k"},
    "password-reset": {"username": "Ann", "resetLink": "https://app.example.com/reset/t0k"},
    "verification": {"username": "Ann", "verificationLink": "https://app.example.com/verify/t0k", "code": "123456"},
    "order-confirmation": {"username": "Ann", "orderNumber": "A-17", "items": [{"name": "Dune", "quantity": 2, "price": "$20"}], "total": "$40"},
    "newsletter": {"title": "Spring news", "intro": "What is new.", "articles": [{"title": "Hello", "summary": "A story.", "url": "https://example.com/a"}]},
}


#: The fields SNS signs, in the order its documentation lists them
#: ("Verifying the signatures of Amazon SNS messages"); Subject only when present.
SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_sign(message: dict[str, Any], key: Any, version: str = "1") -> dict[str, Any]:
    """Sign an SNS message as SNS does, written from AWS's documentation rather than from the code
    under test: ``name\\nvalue\\n`` for each signed field (the values unescaped, as in the parsed
    JSON), RSA PKCS#1 v1.5 over SHA1 (SignatureVersion 1) or SHA256 (2), base64."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    fields = SNS_SIGNED_FIELDS[message["Type"]]
    text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), algorithm)
    return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}
