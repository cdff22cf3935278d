"""Provider event webhooks: signature checks and one event model.

- SendGrid Event Webhook: ECDSA P-256/SHA-256 over ``timestamp + body``
  (``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``), checked with
  the verification key (``email.webhooks.sendgrid_public_key``).
- Mailgun: HMAC-SHA256 of ``timestamp + token`` with the webhook signing key.
- SES through SNS: the SNS message signature (SignatureVersion 1: SHA1, 2:
  SHA256) checked with the certificate at ``SigningCertURL``, which must be
  HTTPS on an SNS host (``email.webhooks.ses_cert_host``); the topic must be
  in ``email.webhooks.ses_topic_arns`` (required: SNS signs every account's
  topics alike). A SubscriptionConfirmation is confirmed by visiting its
  SubscribeURL, which must be on an SNS host and name the same topic.

A bad, missing, stale or already-seen signature is refused (401) before
anything is recorded. Events become :class:`Event`: ``delivered``,
``deferred``, ``bounced:hard``, ``bounced:soft``, ``complained``,
``unsubscribed``, ``opened``, ``clicked``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import attrs


class WebhookRejected(Exception):
    """The request is not a genuine, fresh provider callback (answered 401)."""


class WebhookMalformed(Exception):
    """Signed, but not a payload we understand (answered 400)."""


@attrs.define(frozen=True, kw_only=True)
class Event:
    event: str
    address: str | None
    message_id: str | None = None
    template: str | None = None
    detail: str | None = None
    at: dt.datetime | None = None


def _ts(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _fresh(timestamp: Any, max_age: float) -> None:
    try:
        age = abs(time.time() - float(timestamp))
    except (TypeError, ValueError):
        raise WebhookRejected("missing or bad timestamp") from None
    if age > max_age:
        raise WebhookRejected("the signature is too old (or from the future)")


# -- SendGrid ------------------------------------------------------------------------------

SENDGRID_EVENTS = {
    "delivered": "delivered", "deferred": "deferred", "open": "opened", "click": "clicked",
    "spamreport": "complained", "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed",
    "dropped": "failed",
}


def verify_sendgrid(public_key_b64: str | None, headers: Any, body: bytes, max_age: float) -> str:
    """The signature (for replay checks), or WebhookRejected."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not public_key_b64:
        raise WebhookRejected("the SendGrid webhook is not configured (email.webhooks.sendgrid_public_key)")
    signature = headers.get("X-Twilio-Email-Event-Webhook-Signature")
    timestamp = headers.get("X-Twilio-Email-Event-Webhook-Timestamp")
    if not signature or not timestamp:
        raise WebhookRejected("missing signature headers")
    _fresh(timestamp, max_age)
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
        key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        raise WebhookRejected("bad signature") from None
    return "sendgrid:" + signature


def sendgrid_events(body: bytes) -> list[Event]:
    try:
        items = json.loads(body)
    except ValueError:
        raise WebhookMalformed("not JSON") from None
    if not isinstance(items, list):
        raise WebhookMalformed("expected a JSON array of events")
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("event")
        if kind == "bounce":
            # SendGrid: type "bounce" is a hard bounce, "blocked" a soft one.
            event = "bounced:soft" if item.get("type") == "blocked" else "bounced:hard"
        elif kind in SENDGRID_EVENTS:
            event = SENDGRID_EVENTS[kind]
        else:
            continue
        out.append(Event(
            event=event, address=item.get("email"), message_id=item.get("plugboard_message_id") or item.get("sg_message_id"),
            template=item.get("plugboard_template"), detail=item.get("reason") or item.get("response") or item.get("url"),
            at=_ts(item.get("timestamp")),
        ))
    return out


# -- Mailgun -------------------------------------------------------------------------------


def verify_mailgun(signing_key: str | None, payload: Any, max_age: float) -> str:
    if not signing_key:
        raise WebhookRejected("the Mailgun webhook is not configured (email.webhooks.mailgun_signing_key)")
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, dict) or not all(isinstance(sig.get(k), str) for k in ("timestamp", "token", "signature")):
        raise WebhookRejected("missing signature")
    _fresh(sig["timestamp"], max_age)
    expected = hmac.new(signing_key.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig["signature"]):
        raise WebhookRejected("bad signature")
    return "mailgun:" + sig["token"]


def mailgun_events(payload: Any) -> list[Event]:
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise WebhookMalformed("missing event-data")
    kind = data.get("event")
    if kind == "failed":
        event = "bounced:hard" if data.get("severity") == "permanent" else "bounced:soft"
    elif kind in ("delivered", "opened", "clicked", "unsubscribed", "complained"):
        event = kind
    else:
        return []
    headers = (data.get("message") or {}).get("headers") or {}
    variables = data.get("user-variables") or {}
    status = data.get("delivery-status") or {}
    return [Event(
        event=event, address=data.get("recipient"), message_id=variables.get("plugboard_message_id") or headers.get("message-id"),
        template=variables.get("plugboard_template"), detail=status.get("description") or status.get("message") or data.get("reason"),
        at=_ts(data.get("timestamp")),
    )]


# -- SES through SNS ---------------------------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    fields = _SNS_FIELDS.get(message.get("Type"))
    if fields is None:
        raise WebhookRejected("unknown SNS message type")
    parts = []
    for name in fields:
        if name in message and message[name] is not None:
            parts.append(f"{name}\n{message[name]}\n")
        elif name != "Subject":
            raise WebhookRejected(f"the SNS message has no {name}")
    return "".join(parts).encode()


def _sns_host(parts: Any, host_pattern: str) -> bool:
    # urlsplit's hostname drops userinfo and port, so "https://sns.x.amazonaws.com@evil.example/"
    # is evil.example; the pattern must match the whole host name.
    return parts.scheme == "https" and bool(parts.hostname) and re.fullmatch(host_pattern, parts.hostname) is not None


def check_cert_url(url: Any, host_pattern: str) -> str:
    if not isinstance(url, str):
        raise WebhookRejected("no SigningCertURL")
    parts = urlsplit(url)
    if not _sns_host(parts, host_pattern) or not parts.path.endswith(".pem"):
        raise WebhookRejected("SigningCertURL is not an https .pem URL on an SNS host")
    return url


def check_subscribe_url(message: dict[str, Any], host_pattern: str) -> str:
    """The SubscribeURL of a verified SubscriptionConfirmation: https on an SNS host,
    ``Action=ConfirmSubscription`` for the message's own topic."""
    from urllib.parse import parse_qs

    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        raise WebhookRejected("no SubscribeURL")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if not _sns_host(parts, host_pattern):
        raise WebhookRejected("SubscribeURL is not an https URL on an SNS host")
    if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [message.get("TopicArn")]:
        raise WebhookRejected("SubscribeURL does not confirm this message's topic")
    return url


class SnsVerifier:
    """Checks SNS signatures; certificates are fetched once per URL and cached."""

    def __init__(self, host_pattern: str, topics: list[str], ca_file: str | None = None, max_age: float = 300.0) -> None:
        self.max_age = max_age
        self.host_pattern = host_pattern
        self.topics = topics
        self.ca_file = ca_file
        self._certs: dict[str, Any] = {}

    async def _cert(self, url: str) -> Any:
        from cryptography import x509

        cert = self._certs.get(url)
        if cert is not None:
            return cert
        import aiohttp

        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.get(url, ssl=context) as response:
                    if response.status != 200:
                        raise WebhookRejected(f"the signing certificate answered {response.status}")
                    pem = await response.read()
            cert = x509.load_pem_x509_certificate(pem)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise WebhookRejected(f"cannot fetch the signing certificate: {type(e).__name__}") from None
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WebhookRejected("the signing certificate is expired or not yet valid")
        self._certs[url] = cert
        return cert

    async def verify(self, message: Any) -> str:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if not isinstance(message, dict):
            raise WebhookRejected("not an SNS message")
        if not self.topics:
            # SNS signs every topic's messages, any AWS account's: without an allow-list
            # anyone could subscribe this endpoint to a topic of their own and publish bounces.
            raise WebhookRejected("the SES webhook is not configured (email.webhooks.ses_topic_arns)")
        if message.get("TopicArn") not in self.topics:
            raise WebhookRejected("a topic this server does not accept")
        version = message.get("SignatureVersion")
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
        if algorithm is None:
            raise WebhookRejected("unknown SignatureVersion")
        url = check_cert_url(message.get("SigningCertURL"), self.host_pattern)
        to_sign = sns_string_to_sign(message)
        try:
            sent = dt.datetime.fromisoformat(str(message["Timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise WebhookRejected("bad Timestamp") from None
        # SNS retries an HTTP delivery within a few minutes; older messages are replays.
        _fresh(sent.timestamp(), self.max_age)
        cert = await self._cert(url)
        try:
            cert.public_key().verify(base64.b64decode(message.get("Signature") or ""), to_sign, padding.PKCS1v15(), algorithm)
        except (InvalidSignature, ValueError, binascii.Error, TypeError):
            raise WebhookRejected("bad signature") from None
        return "sns:" + str(message.get("MessageId"))


def ses_events(message: dict[str, Any]) -> list[Event]:
    try:
        body = json.loads(message["Message"])
    except (KeyError, ValueError, TypeError):
        raise WebhookMalformed("the SNS Message is not SES JSON") from None
    if not isinstance(body, dict):
        raise WebhookMalformed("the SNS Message is not SES JSON")
    kind = body.get("eventType") or body.get("notificationType")
    mail = body.get("mail") or {}
    message_id = (mail.get("commonHeaders") or {}).get("messageId") or mail.get("messageId")
    tags = mail.get("tags") or {}
    template = (tags.get("plugboard_template") or [None])[0]

    def each(addresses: list[Any], event: str, detail: str | None = None) -> list[Event]:
        return [Event(event=event, address=a if isinstance(a, str) else (a or {}).get("emailAddress"), message_id=message_id, template=template, detail=detail) for a in addresses]

    if kind == "Bounce":
        bounce = body.get("bounce") or {}
        event = "bounced:hard" if bounce.get("bounceType") == "Permanent" else "bounced:soft"
        return each(bounce.get("bouncedRecipients") or [], event, bounce.get("bounceSubType"))
    if kind == "Complaint":
        complaint = body.get("complaint") or {}
        return each(complaint.get("complainedRecipients") or [], "complained", complaint.get("complaintFeedbackType"))
    if kind == "Delivery":
        return each((body.get("delivery") or {}).get("recipients") or [], "delivered")
    if kind == "DeliveryDelay":
        return each([r.get("emailAddress") for r in (body.get("deliveryDelay") or {}).get("delayedRecipients") or []], "deferred")
    if kind == "Open":
        return each(mail.get("destination") or [], "opened")
    if kind == "Click":
        return each(mail.get("destination") or [], "clicked", (body.get("click") or {}).get("link"))
    return []
