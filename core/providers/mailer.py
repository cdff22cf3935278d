"""The mailer provider kind: how every plugin sends email.

The deployer selects one mailer service (or several, by name) in the
``services.mailer`` section: ``outbox`` (the embedded default: ``.eml`` files) or
``smtp`` from the core, others from plugins. A mailer raises
:class:`MailerError` with ``permanent=True`` when sending again cannot help
(a 5xx answer: recipient or sender refused, authentication failed) and
``permanent=False`` otherwise (connection trouble, timeouts, 4xx answers), so
a queue retries only what may work later. The message helpers here
(:func:`build_message`, :func:`parse_addresses`, :func:`recipients`) refuse
header injection.
"""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage
from typing import Iterable, Mapping, Protocol, runtime_checkable

import attrs

from plugboard.errors import PlugboardError

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

    The implementer's manual: declare ``ProviderSpec(kind="mailer", name=...,
    factory=..., config=YourOptions)``; a deployer selects it once in the
    ``services.mailer`` section and every plugin sends through it
    (``app[keys.SERVICES].get("mailer")``). Build messages with
    :func:`build_message`; envelope recipients come from :func:`recipients`.

    Lifecycle: ``await start()`` / ``await close()`` (may do nothing);
    ``await check()`` raises when the mailer cannot send now (``/readyz``).
    ``send`` delivers to the message's To and Cc plus ``bcc`` (which
    appears in no header) and returns a :class:`SendResult`, or raises
    :class:`MailerError` (``permanent`` when retrying cannot help).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

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
