"""The ``mailgun`` mailer: ``POST /v3/<domain>/messages`` (multipart form, Basic ``api:<key>``).

US (``api.mailgun.net``) or EU (``api.eu.mailgun.net``) region. Custom headers
go as ``h:<Name>``; the message's Message-ID and template as user variables
(``v:plugboard_message_id``, ``v:plugboard_template``), which Mailgun echoes in
webhook events.
"""

from __future__ import annotations

import base64
import email.utils
from email.message import EmailMessage
from typing import Iterable

import aiohttp

from plugboard.providers.mailer import SendResult
from plugboard.plugins.email.providers import parts
from plugboard.plugins.email.providers.config import MailgunConfig
from plugboard.plugins.email.providers.http import HttpMailer


class _Form:
    """multipart/form-data, as Mailgun's documentation sends it; a field may repeat (``to``)."""

    def __init__(self) -> None:
        self.writer = aiohttp.MultipartWriter("form-data")

    def add_field(self, name: str, value: str) -> None:
        part = self.writer.append(value, {"Content-Type": "text/plain; charset=utf-8"})
        part.set_content_disposition("form-data", name=name)


def form(message: EmailMessage, bcc: Iterable[str] = (), *, test_mode: bool = False) -> aiohttp.MultipartWriter:
    p = parts(message, bcc)
    data = _Form()
    data.add_field("from", email.utils.formataddr(p.sender))
    for field, items in (("to", p.to), ("cc", p.cc), ("bcc", p.bcc)):
        for item in items:
            data.add_field(field, email.utils.formataddr(item))
    data.add_field("subject", p.subject)
    if p.text is not None:
        data.add_field("text", p.text)
    if p.html is not None:
        data.add_field("html", p.html)
    if p.reply_to:
        data.add_field("h:Reply-To", ", ".join(email.utils.formataddr(a) for a in p.reply_to))
    data.add_field("h:Message-Id", p.message_id)
    for name, value in p.headers.items():
        data.add_field(f"h:{name}", value)
    data.add_field("v:plugboard_message_id", p.message_id.strip("<>"))
    if p.template:
        data.add_field("v:plugboard_template", p.template)
        data.add_field("o:tag", p.template)
    if test_mode:
        data.add_field("o:testmode", "yes")
    return data.writer


class MailgunMailer(HttpMailer):
    name = "Mailgun"

    def __init__(self, config: MailgunConfig) -> None:
        super().__init__(config.timeout)
        self.config = config

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        p = parts(message, bcc)
        await self._post(
            self.config.url(),
            data=form(message, bcc, test_mode=self.config.test_mode),
            headers={"Authorization": "Basic " + base64.b64encode(f"api:{self.config.api_key}".encode()).decode()},
        )
        return SendResult(message_id=str(message["Message-ID"]), accepted=[a for _n, a in [*p.to, *p.cc, *p.bcc]])
