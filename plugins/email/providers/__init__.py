"""The email plugin's mailers: ``sendgrid``, ``mailgun``, ``ses`` (the core has ``outbox`` and ``smtp``).

Each is a ``mailer`` provider a deployer selects in ``services.mailer``. Errors
follow the core's :class:`~plugboard.providers.mailer.MailerError`: permanent
for a 4xx answer except 429 (bad request, bad credentials, refused sender or
recipient), temporary for 429, 5xx, timeouts and connection trouble.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from typing import Any, Iterable

import attrs

from plugboard.providers.registry import ProviderSpec
from plugboard.providers.mailer import MailerError, RESERVED_HEADERS


def provider_specs() -> list[ProviderSpec]:
    """The three mailers; factories are lazy paths, configs are small attrs classes."""
    from plugboard.plugins.email.providers.config import MailgunConfig, SendgridConfig, SesConfig

    return [
        ProviderSpec(kind="mailer", name="sendgrid", factory="plugboard.plugins.email.providers.sendgrid:SendgridMailer",
                     config=SendgridConfig, description="SendGrid v3 Mail Send over HTTPS (aiohttp)"),
        ProviderSpec(kind="mailer", name="mailgun", factory="plugboard.plugins.email.providers.mailgun:MailgunMailer",
                     config=MailgunConfig, description="Mailgun messages API, US or EU region (aiohttp)"),
        ProviderSpec(kind="mailer", name="ses", factory="plugboard.plugins.email.providers.ses:SesMailer",
                     config=SesConfig, requires="plugboard[ses]", description="Amazon SES v2, raw MIME (aiobotocore)"),
    ]


#: Headers an API mailer passes on as custom headers (everything else it builds itself).
_SKIP = RESERVED_HEADERS | {"x-plugboard-template", "dkim-signature"}


@attrs.define(frozen=True, kw_only=True)
class Parts:
    """What an API mailer needs from an :class:`EmailMessage`."""

    sender: tuple[str, str]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    message_id: str
    template: str | None


def parts(message: EmailMessage, bcc: Iterable[str] = ()) -> Parts:
    def addresses(name: str) -> list[tuple[str, str]]:
        return [(n, a) for n, a in email.utils.getaddresses([str(v) for v in message.get_all(name, [])]) if a]

    senders = addresses("From")
    if len(senders) != 1:
        raise MailerError("the message needs exactly one From address", permanent=True)
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    if message.is_multipart() and any(p.get_content_disposition() == "attachment" for p in message.iter_attachments()):
        raise MailerError("attachments are not supported by this mailer", permanent=True)
    return Parts(
        sender=senders[0],
        to=addresses("To"),
        cc=addresses("Cc"),
        bcc=[(n, a) for n, a in email.utils.getaddresses(list(bcc)) if a],
        reply_to=addresses("Reply-To"),
        subject=str(message.get("Subject", "")),
        text=text_part.get_content() if text_part is not None else None,
        html=html_part.get_content() if html_part is not None else None,
        headers={k: str(v) for k, v in message.items() if k.lower() not in _SKIP},
        message_id=str(message.get("Message-ID", "")),
        template=str(message["X-Plugboard-Template"]) if message.get("X-Plugboard-Template") else None,
    )


def classify_status(status: int) -> bool:
    """True (permanent) for a 4xx other than 408/429; 5xx and the rest are temporary."""
    return 400 <= status < 500 and status not in (408, 429)


def _describe(body: Any) -> str:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:500]
        if "message" in body:
            return str(body["message"])[:500]
    return str(body)[:500]


__all__ = ["provider_specs", "Parts", "parts", "classify_status"]
