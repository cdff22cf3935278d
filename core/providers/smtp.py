"""The ``smtp`` mailer: delivery through an SMTP server with aiosmtplib."""

from __future__ import annotations

import asyncio
import email.utils
from email.message import EmailMessage
from typing import Iterable, Literal

import attrs

from plugboard import validators
from plugboard.providers.mailer import MailerError, SendResult, recipients
from plugboard.units import Duration, Secret


@attrs.define(frozen=True, kw_only=True)
class SmtpConfig:
    """The ``smtp`` mailer's server."""

    host: str = "localhost"
    port: int = attrs.field(default=587, validator=validators.port)
    user: str | None = None
    password: Secret | None = None
    #: Upgrade with STARTTLS: ``auto`` (when the server offers it), true (required) or false.
    starttls: Literal["auto"] | bool = "auto"
    #: Implicit TLS from the first byte (port 465); excludes ``starttls: true``.
    tls: bool = False
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
    #: Send ``user``/``password`` over a connection without TLS (a local relay only).
    #: Off: with credentials, STARTTLS is required unless ``tls`` is on.
    allow_plaintext_auth: bool = False
    #: A CA bundle the server's certificate must chain to (null: the system's).
    ca_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.tls and self.starttls is True:
            raise ValueError("tls and starttls exclude each other: tls is for port 465, starttls for 587")
        if self.user and not self.tls and self.starttls is False and not self.allow_plaintext_auth:
            raise ValueError(
                "starttls: false with a user would send the password without TLS; "
                "use starttls (587) or tls (465), or set allow_plaintext_auth: true for a local relay"
            )

    def start_tls(self) -> bool | None:
        """aiosmtplib's ``start_tls``: required whenever credentials would otherwise travel in clear."""
        if self.tls:
            return False
        if self.user and not self.allow_plaintext_auth:
            return True
        return None if self.starttls == "auto" else bool(self.starttls)



class SmtpMailer:
    """Delivers through an SMTP server with aiosmtplib (one connection per message)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        """The server answers its greeting and NOOP (``/readyz``); nothing is sent."""
        import aiosmtplib

        c = self.config
        client = aiosmtplib.SMTP(hostname=c.host, port=c.port, use_tls=c.tls, start_tls=False, timeout=min(c.timeout, 5.0), cert_bundle=c.ca_file)
        try:
            await client.connect()
            await client.noop()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            raise MailerError(f"the SMTP server {c.host}:{c.port} does not answer: {type(e).__name__}: {e}", permanent=False) from e
        finally:
            if client.is_connected:
                client.close()

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
                start_tls=c.start_tls(),
                cert_bundle=c.ca_file,
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
            final = c.start_tls() is True and "STARTTLS" in str(e)
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=final) from e
        except (OSError, asyncio.TimeoutError) as e:
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=False) from e
        refused_text = {addr: f"{r.code} {r.message}" for addr, r in refused.items()}
        return SendResult(
            message_id=str(message["Message-ID"]),
            accepted=[a for a in to if a not in refused],
            refused=refused_text,
        )
