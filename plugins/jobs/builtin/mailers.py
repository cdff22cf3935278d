"""The mailer provider kind and its two embedded implementations: ``outbox`` and ``smtp``.

``send-email`` builds an :class:`email.message.EmailMessage` with
:func:`build_message` and hands it to the mailer selected by
``jobs.email.mailer``. A mailer raises :class:`MailerError` with
``permanent=True`` when sending again cannot help (a 5xx answer: recipient or
sender refused, authentication failed) and ``permanent=False`` otherwise
(connection trouble, timeouts, 4xx answers), so the job retries only what may
work later. The email plugin will take these providers over; they live here
until it exists.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import os
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import attrs

from plugboard.errors import PlugboardError
from plugboard.plugins.jobs.builtin.config import OutboxConfig, SmtpConfig
from plugboard.providers.registry import ProviderSpec

PROVIDER_SPECS = [
    ProviderSpec(
        kind="mailer",
        name="outbox",
        factory="plugboard.plugins.jobs.builtin.mailers:OutboxMailer",
        config=OutboxConfig,
        description="writes each message as an RFC 5322 .eml file (default <data_dir>/outbox)",
    ),
    ProviderSpec(
        kind="mailer",
        name="smtp",
        factory="plugboard.plugins.jobs.builtin.mailers:SmtpMailer",
        config=SmtpConfig,
        requires="aiosmtplib",
        description="delivers through an SMTP server (aiosmtplib)",
    ),
]

#: Headers a job may not set through ``headers``: the message's own structure.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Subject", "Reply-To", "Date", "Message-ID", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Sender", "Return-Path",
    )
)


class MailerError(PlugboardError):
    """Sending failed; ``permanent`` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@attrs.define(frozen=True, kw_only=True)
class SendResult:
    message_id: str
    #: Recipients the server accepted.
    accepted: list[str]
    #: Recipient -> the server's answer, for those refused while others were accepted.
    refused: dict[str, str] = attrs.field(factory=dict)


@runtime_checkable
class Mailer(Protocol):
    """Delivers an :class:`email.message.EmailMessage`.

    Lifecycle: ``await start()`` / ``await close()`` (may do nothing).
    ``send`` delivers to the message's To and Cc plus ``bcc`` (which
    appears in no header) and returns a :class:`SendResult`, or raises
    :class:`MailerError` (``permanent`` when retrying cannot help).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult: ...


def parse_addresses(value: str | Iterable[str] | None, field: str) -> list[str]:
    """Addresses from a string (comma-separated allowed) or a list; ValueError names the bad one."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{field}: {item!r} is not an email address")
        if "\r" in item or "\n" in item:
            raise ValueError(f"{field}: line breaks are not allowed in addresses")
        for name, addr in email.utils.getaddresses([item]):
            if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@") or " " in addr:
                raise ValueError(f"{field}: {item!r} is not an email address")
            out.append(email.utils.formataddr((name, addr)) if name else addr)
    return out


def build_message(
    *,
    sender: str,
    to: list[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    cc: list[str] | None = None,
    reply_to: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
    domain: str | None = None,
) -> EmailMessage:
    """An RFC 5322 message: text, HTML, or both (multipart/alternative). ValueError on bad input.

    Bcc recipients are not part of the message: they go to :meth:`Mailer.send`.
    """
    if text is None and html is None:
        raise ValueError("give text, html or both")
    if "\r" in subject or "\n" in subject:
        raise ValueError("subject: line breaks are not allowed")
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if reply_to:
        message["Reply-To"] = ", ".join(reply_to)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=domain or _domain_of(sender))
    message["MIME-Version"] = "1.0"
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("headers: names and values must be strings")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"headers: {name!r} is set from the job's own arguments")
        if not name or any(c in name for c in ": \r\n\t") or not name.isascii() or "\r" in value or "\n" in value:
            raise ValueError(f"headers: {name!r} is not an acceptable header")
        message[name] = value
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    return message


def _domain_of(sender: str) -> str:
    addr = email.utils.parseaddr(sender)[1]
    return addr.rpartition("@")[2] or "localhost"


def recipients(message: EmailMessage, bcc: Iterable[str] = ()) -> list[str]:
    """Every envelope recipient: To, Cc, then ``bcc``."""
    fields = [str(v) for h in ("To", "Cc") for v in message.get_all(h, [])]
    addresses = [addr for _name, addr in email.utils.getaddresses(fields) if addr]
    addresses += [addr for _name, addr in email.utils.getaddresses(list(bcc)) if addr]
    return list(dict.fromkeys(addresses))


class OutboxMailer:
    """Writes each message to ``<dir>/<timestamp>-<uuid>.eml`` (atomically); delivers nothing.

    The embedded default: development and tests read what would have been sent.
    Bcc recipients are written as a first ``X-Outbox-Bcc`` header so they can be checked.
    """

    def __init__(self, config: OutboxConfig | None = None, *, app: Any = None, dir: Path | None = None) -> None:
        config = config or OutboxConfig()
        if dir is None:
            if app is None:
                raise MailerError("the outbox mailer needs the app or a folder", permanent=True)
            from plugboard import keys

            root = app[keys.SETTINGS].root
            dir = root / config.dir if config.dir else root / app[keys.CORE_CONFIG].server.data_dir / "outbox"
        self.dir = Path(dir)

    async def start(self) -> None:
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        bcc = list(bcc)
        to = recipients(message, bcc)
        data = message.as_bytes(policy=email.policy.SMTP)
        if bcc:
            data = f"X-Outbox-Bcc: {', '.join(bcc)}\r\n".encode() + data
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.eml"
        try:
            await asyncio.to_thread(self._write, name, data)
        except OSError as e:
            raise MailerError(f"cannot write to the outbox {self.dir}: {e}", permanent=False) from e
        return SendResult(message_id=str(message["Message-ID"]), accepted=to)

    def _write(self, name: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.dir / name)

    def messages(self) -> list[Path]:
        """The .eml files written so far, oldest first."""
        return sorted(self.dir.glob("*.eml"), key=lambda p: (p.stat().st_mtime, p.name))


class SmtpMailer:
    """Delivers through an SMTP server with aiosmtplib (one connection per message)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        import aiosmtplib

        c = self.config
        to = recipients(message, bcc)
        sender = email.utils.parseaddr(str(message["From"]))[1]
        try:
            refused, _reply = await aiosmtplib.send(
                message,
                sender=sender,
                recipients=to,
                hostname=c.host,
                port=c.port,
                username=c.user,
                password=c.password,
                use_tls=c.tls,
                start_tls=None if c.starttls == "auto" else bool(c.starttls),
                timeout=c.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as e:
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            permanent = all(r.code >= 500 for r in e.recipients)
            raise MailerError(f"every recipient was refused ({answers})", permanent=permanent) from e
        except aiosmtplib.SMTPResponseException as e:
            # Sender refused, data refused, authentication failed ...: 5xx is final.
            raise MailerError(f"the SMTP server answered {e.code} {e.message}", permanent=e.code >= 500) from e
        except aiosmtplib.SMTPNotSupported as e:
            raise MailerError(f"the SMTP server does not support what the settings ask: {e}", permanent=True) from e
        except aiosmtplib.SMTPException as e:
            # aiosmtplib reports a missing STARTTLS extension as a plain SMTPException;
            # with `starttls: true` the settings ask for what this server cannot do.
            final = c.starttls is True and "STARTTLS" in str(e)
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=final) from e
        except (OSError, asyncio.TimeoutError) as e:
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=False) from e
        refused_text = {addr: f"{r.code} {r.message}" for addr, r in refused.items()}
        return SendResult(
            message_id=str(message["Message-ID"]),
            accepted=[a for a in to if a not in refused],
            refused=refused_text,
        )

