"""``send-email``: one message through the mailer service ``jobs.email.mailer`` names.

Arguments: ``to`` (an address or a list), ``subject``, ``text`` and/or
``html``, and optionally ``from`` (else ``jobs.email.from_address``),
``reply_to``, ``cc``, ``bcc`` and extra ``headers``. Bad arguments (an
unparsable address, neither text nor html, a header the message sets itself)
fail at once; so does an answer of the SMTP server that will not change (a
refused recipient, 5xx); connection trouble and 4xx answers retry.
Result: ``{message_id, accepted, refused}``.

``idempotency_key``: when the app has a :class:`SendGuard` (``jobs.keys.SEND_GUARD``,
set by the email plugin), the guard claims the key before sending, may finish
the message (a Message-ID stable across attempts, a DKIM signature) and
records the outcome, so a redelivered job whose message was sent returns the
first result instead of sending again. A claim is a lease: the mailer call is
cut off when it runs out (a temporary failure, retried), and a delivery that
finds another attempt's lease running is retried later without sending.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any, Awaitable, Callable, Protocol, TypedDict, Unpack

from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.plugins.jobs.builtin.services import Services
from plugboard.plugins.jobs.keys import SEND_GUARD
from plugboard.providers.mailer import MailerError, SendResult, build_message, parse_addresses
from plugboard.tasks import PermanentError, TaskContext, retry


# ``from`` is a Python keyword, so it arrives through **extra (PEP 692).
SendEmailExtra = TypedDict("SendEmailExtra", {"from": str}, total=False)


class SendGuard(Protocol):
    """Keeps ``send-email`` jobs with an ``idempotency_key`` from sending twice."""

    #: Seconds a claim holds (0: no limit); the send must end within it.
    lease: float

    async def claim(self, key: str) -> dict[str, Any] | None:
        """None: send now. A result: already sent, return it. Raise MailerError: do not send
        (``permanent`` False: another attempt holds the key; try again later)."""

    def prepare(self, key: str, message: EmailMessage) -> EmailMessage:
        """The message to send (e.g. with a stable Message-ID and a DKIM signature)."""

    async def finish(self, key: str, result: dict[str, Any] | None, error: MailerError | None) -> None:
        """Record the outcome of the claimed send."""


def make_task(settings: BuiltinConfig, services: Services) -> Callable[..., Any]:
    @retry(backoff=5.0, max_backoff=600.0)
    async def send_email(
        job: TaskContext,
        to: str | list,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        reply_to: str | list | None = None,
        cc: str | list | None = None,
        bcc: str | list | None = None,
        headers: dict | None = None,
        idempotency_key: str | None = None,
        **extra: Unpack[SendEmailExtra],
    ) -> dict[str, Any]:
        """Send one email; ``from`` may be given as an argument (a Python keyword, hence ``**extra``)."""
        sender = extra.get("from") or settings.email.from_address
        try:
            message = build_message(
                sender=_one_address(sender),
                to=parse_addresses(to, "to"),
                cc=parse_addresses(cc, "cc"),
                reply_to=parse_addresses(reply_to, "reply_to"),
                subject=subject,
                text=text,
                html=html,
                headers=headers,
            )
            blind = parse_addresses(bcc, "bcc")
            if not message.get_all("To") and not message.get_all("Cc") and not blind:
                raise ValueError("the message has no recipients")
        except ValueError as e:
            raise PermanentError(f"send-email: {e}") from None
        # No progress report: one costs a job-store write and an event, more than
        # the send itself on a local relay, and a send has no midpoint to show.
        mailer = await services.mailer(job.app)
        guard = job.app.get(SEND_GUARD) if idempotency_key else None
        lease = None
        if guard is not None:
            try:
                done = await guard.claim(idempotency_key)
            except MailerError as e:
                if e.permanent:
                    raise PermanentError(str(e)) from e
                raise
            if done is not None:
                return done
            message = guard.prepare(idempotency_key, message)
            lease = guard.lease or None
        try:
            sent = await _within(mailer.send(message, bcc=blind), lease)
        except MailerError as e:
            if guard is not None:
                await guard.finish(idempotency_key, None, e)
            if e.permanent:
                raise PermanentError(str(e)) from e
            raise
        result = {"message_id": sent.message_id, "accepted": sent.accepted, "refused": sent.refused}
        if guard is not None:
            await guard.finish(idempotency_key, result, None)
        return result

    return send_email


async def _within(send: Awaitable[SendResult], lease: float | None) -> SendResult:
    """The mailer's answer, cut off when the claim's lease runs out (a temporary failure)."""
    if lease is None:
        return await send
    try:
        return await asyncio.wait_for(send, lease)
    except asyncio.TimeoutError:
        raise MailerError(f"the mailer did not answer within the send lease ({lease:g}s)", permanent=False) from None


def _one_address(value: Any) -> str:
    addresses = parse_addresses(value, "from")
    if len(addresses) != 1:
        raise ValueError("from: expected one address")
    return addresses[0]
