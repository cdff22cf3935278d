"""The ``sendgrid`` mailer: SendGrid v3 Mail Send (``POST /v3/mail/send``, JSON, Bearer key).

SendGrid answers 202 with the message's id in ``X-Message-Id``. The message's
own Message-ID and template travel as ``custom_args`` (``plugboard_message_id``,
``plugboard_template``), which SendGrid echoes in every Event Webhook event.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any, Iterable

from plugboard.providers.mailer import SendResult
from plugboard.plugins.email.providers import parts
from plugboard.plugins.email.providers.config import SendgridConfig
from plugboard.plugins.email.providers.http import HttpMailer


def _address(pair: tuple[str, str]) -> dict[str, str]:
    name, addr = pair
    return {"email": addr, "name": name} if name else {"email": addr}


def payload(message: EmailMessage, bcc: Iterable[str] = (), *, sandbox: bool = False) -> dict[str, Any]:
    """The Mail Send request body for ``message``."""
    p = parts(message, bcc)
    personalization: dict[str, Any] = {"to": [_address(a) for a in p.to]}
    if p.cc:
        personalization["cc"] = [_address(a) for a in p.cc]
    if p.bcc:
        personalization["bcc"] = [_address(a) for a in p.bcc]
    content = []
    # SendGrid requires text/plain first, then text/html.
    if p.text is not None:
        content.append({"type": "text/plain", "value": p.text})
    if p.html is not None:
        content.append({"type": "text/html", "value": p.html})
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": _address(p.sender),
        "subject": p.subject,
        "content": content,
        "custom_args": {"plugboard_message_id": p.message_id.strip("<>"), **({"plugboard_template": p.template} if p.template else {})},
    }
    if p.reply_to:
        if len(p.reply_to) == 1:
            body["reply_to"] = _address(p.reply_to[0])
        else:
            body["reply_to_list"] = [_address(a) for a in p.reply_to]
    if p.headers:
        body["headers"] = p.headers
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


class SendgridMailer(HttpMailer):
    name = "SendGrid"

    def __init__(self, config: SendgridConfig) -> None:
        super().__init__(config.timeout)
        self.config = config

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        body = payload(message, bcc, sandbox=self.config.sandbox)
        await self._post(
            f"{self.config.base_url.rstrip('/')}/v3/mail/send",
            json=body,
            headers={"Authorization": f"Bearer {self.config.api_key}"},
        )
        p = body["personalizations"][0]
        accepted = [a["email"] for key in ("to", "cc", "bcc") for a in p.get(key, [])]
        return SendResult(message_id=str(message["Message-ID"]), accepted=accepted)
