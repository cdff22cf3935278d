"""SES (through SNS) and Mailgun event webhooks, checked against the providers' documentation.

SNS: messages shaped and delivered as SNS delivers them to an HTTPS endpoint
(``text/plain`` body, ``x-amz-sns-*`` headers, every documented field), signed
as SNS documents (``tests/plugins/email/email_testkit.sns_sign``, written from
the documentation, not from the code under test) with a test signing
certificate served over HTTPS by a local CA; SignatureVersion 1 (SHA1) and 2
(SHA256); Subject signed when present; Message values with escaped
characters; SubscriptionConfirmation and UnsubscribeConfirmation; the
certificate and SubscribeURL host checks with the shipped pattern; the topic
allow-list. SES payloads are the documented event-publishing (``eventType``)
and notification (``notificationType``) forms.

Mailgun: the documented webhook JSON (``signature {timestamp, token,
signature}`` beside ``event-data``), HMAC-SHA256 of timestamp + token with the
webhook signing key, hex; a reused token (even re-signed with a fresh
timestamp) and a stale or future timestamp are refused.

Each genuine event ends in its effect: hard bounces and complaints on the
suppression list (and ``sendEmail`` then refused with ``EMAIL_SUPPRESSED``),
soft bounces not; counts per template and day in ``emailStats``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
import uuid

import pytest
from aiohttp import web
from email_testkit import events, gql, make_cert, sns_sign

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.webhooks import WebhookRejected, check_cert_url
from plugboard.testing_servers import free_port

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
SUBSCRIPTION = TOPIC + ":a1b2c3d4-0000-1111-2222-333344445555"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
STATS = "query($f: String!, $to: String!) { emailStats(from: $f, to: $to) { template event count } }"
SEND = 'mutation($to: String!) { sendEmail(to: $to, templateId: "welcome", variables: {username: "A"}) }'
SHIPPED_HOST = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
async def sns(tls_files):
    """A local stand-in for SNS's HTTPS side: the signing certificate (under the test CA) and SubscribeURL."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_cert = x509.load_pem_x509_certificate(tls_files.ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_cert("sns.amazonaws.com", tls_files.ca_key, ca_cert.subject, key, ca=False)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    requests: list[str] = []

    async def certificate(request):
        requests.append(request.path_qs)
        return web.Response(body=pem, content_type="application/x-x509-ca-cert")

    async def confirm(request):
        requests.append(request.path_qs)
        arn = request.query["TopicArn"] + ":a1b2c3d4"
        return web.Response(text=f"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>{arn}</SubscriptionArn>"
                                 "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-0000000000000000000000.pem", certificate)
    app.router.add_get("/", confirm)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls_files.server_context()).start()
    base = f"https://localhost:{port}"
    yield {"key": key, "base": base, "cert_url": f"{base}/SimpleNotificationService-0000000000000000000000.pem", "requests": requests}
    await runner.cleanup()


def notification(sns, body: dict, *, version: str = "1", subject: str | None = None, topic: str = TOPIC) -> dict:
    """An SNS Notification as delivered to an HTTP/S endpoint (documented field set)."""
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(body, indent=2),  # SNS passes SES's JSON through as a string, newlines and all
        "Timestamp": now_iso(),
        "SigningCertURL": sns["cert_url"],
        "UnsubscribeURL": f"{sns['base']}/?Action=Unsubscribe&SubscriptionArn={SUBSCRIPTION}",
    }
    if subject is not None:
        message["Subject"] = subject
    return sns_sign(message, sns["key"], version)


def confirmation(sns, type_: str = "SubscriptionConfirmation", *, topic: str = TOPIC, subscribe_url: str | None = None, version: str = "1") -> dict:
    token = uuid.uuid4().hex * 2
    message = {
        "Type": type_,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url or f"{sns['base']}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
        "Timestamp": now_iso(),
        "SigningCertURL": sns["cert_url"],
    }
    return sns_sign(message, sns["key"], version)


async def deliver(client, message: dict):
    """POST as SNS does: the JSON document as text/plain, with SNS's own headers."""
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "User-Agent": "Amazon Simple Notification Service Agent",
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
    }
    if message["Type"] == "Notification":
        headers["x-amz-sns-subscription-arn"] = SUBSCRIPTION
    return await client.post("/email/webhooks/ses", data=json.dumps(message, indent=2), headers=headers)


def ses_mail(destination: list[str], template: str | None = "welcome", message_id: str = "<pb-1@example.com>") -> dict:
    mail = {
        "timestamp": "2026-12-04T10:00:00.000Z", "source": "Plugboard <noreply@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com", "sendingAccountId": "123456789012",
        "messageId": "0100019392a8c5d1-6a5e3f2b-0000-0000-0000-000000000000-000000", "destination": destination,
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": message_id}],
        "commonHeaders": {"from": ["Plugboard <noreply@example.com>"], "to": destination, "messageId": message_id, "subject": "Welcome"},
    }
    if template:
        mail["tags"] = {"ses:configuration-set": ["plugboard"], "plugboard_template": [template]}
    return mail


def ses_bounce(address: str, kind: str = "Permanent", sub: str = "General") -> dict:
    # The event-publishing form ("eventType"), as a configuration set's SNS destination sends it.
    return {"eventType": "Bounce", "bounce": {
        "bounceType": kind, "bounceSubType": sub, "bouncedRecipients": [
            {"emailAddress": address, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown\r\n"}],
        "timestamp": "2026-12-04T10:00:01.000Z", "feedbackId": "0100019392a8c7aa-feedback", "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
    }, "mail": ses_mail([address])}


def ses_complaint(address: str) -> dict:
    # The notification form ("notificationType"), as identity notifications send it.
    return {"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": address}], "timestamp": "2026-12-04T10:00:02.000Z",
        "feedbackId": "0100019392a8c7aa-complaint", "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse",
    }, "mail": ses_mail([address])}


def ses_delivery(address: str) -> dict:
    return {"eventType": "Delivery", "delivery": {
        "timestamp": "2026-12-04T10:00:03.000Z", "processingTimeMillis": 546, "recipients": [address],
        "smtpResponse": "250 ok:  Message 64111812 accepted", "reportingMTA": "a8-70.smtp-out.amazonses.com",
    }, "mail": ses_mail([address])}


@pytest.fixture
def settings(tls_files):
    def make(**webhooks) -> dict:
        hooks = {"ses_cert_host": "localhost", "ses_ca_file": str(tls_files.ca_cert), "ses_topic_arns": [TOPIC],
                 "mailgun_signing_key": MAILGUN_KEY, **webhooks}
        return {"email": {"features": {"analytics": True}, "webhooks": hooks}}

    return make


@pytest.fixture
async def client(make_email_app, client_for, settings):
    return await client_for(make_email_app(settings()))


async def stats(client) -> dict:
    today = dt.date.today().isoformat()
    rows = (await gql(client, STATS, {"f": today, "to": today}))["data"]["emailStats"]
    return {(r["template"], r["event"]): r["count"] for r in rows}


async def suppressed(client) -> list[str]:
    rows = (await gql(client, "{ emailSuppressions { address } }"))["data"]["emailSuppressions"]
    return sorted(r["address"] for r in rows)


# -- SES through SNS ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_events_as_sns_delivers_them_end_in_suppression_and_counts(client, sns, version):
    for body, subject in ((ses_bounce("gone@example.com"), None), (ses_bounce("full@example.com", "Transient", "MailboxFull"), None),
                          (ses_complaint("angry@example.com"), "Amazon SES Email Event Notification"), (ses_delivery("ok@example.com"), None)):
        response = await deliver(client, notification(sns, body, version=version, subject=subject))
        assert response.status == 200, await response.text()
    recorded = [(e.provider, e.event, e.address, e.template) for e in await events(client.server.app)]
    assert recorded == [("ses", "bounced:hard", "gone@example.com", "welcome"), ("ses", "bounced:soft", "full@example.com", "welcome"),
                        ("ses", "complained", "angry@example.com", "welcome"), ("ses", "delivered", "ok@example.com", "welcome")]
    # Hard bounces and complaints are suppressed; a full mailbox (transient) is not.
    assert await suppressed(client) == ["angry@example.com", "gone@example.com"]
    assert await stats(client) == {("welcome", "bounced"): 2, ("welcome", "complained"): 1, ("welcome", "delivered"): 1}
    refused = await gql(client, SEND, {"to": "gone@example.com"})
    assert refused["errors"][0]["extensions"]["code"] == "EMAIL_SUPPRESSED"
    assert (await gql(client, SEND, {"to": "full@example.com"}))["data"]["sendEmail"] is True
    # The certificate was fetched over HTTPS once, then cached.
    assert sns["requests"] == ["/SimpleNotificationService-0000000000000000000000.pem"]


async def test_a_signed_subject_cannot_be_altered_or_dropped(client, sns):
    message = notification(sns, ses_bounce("gone@example.com"), subject="Amazon SES Email Event Notification")
    altered = {**message, "Subject": "Something else"}
    dropped = {k: v for k, v in message.items() if k != "Subject"}
    assert (await deliver(client, altered)).status == 401
    assert (await deliver(client, dropped)).status == 401
    assert await events(client.server.app) == [] and await suppressed(client) == []


async def test_subscription_confirmation_visits_subscribe_url(client, sns):
    message = confirmation(sns)
    response = await deliver(client, message)
    assert response.status == 200 and (await response.json()) == {"confirmed": True}
    assert sns["requests"][-1] == "/?" + message["SubscribeURL"].split("?", 1)[1]
    assert await events(client.server.app) == []
    # The same confirmation again is a replay.
    assert (await deliver(client, message)).status == 401


@pytest.mark.parametrize("case", ["foreign-host", "other-action", "other-topic", "http", "unlisted-topic"])
async def test_a_subscription_confirmation_that_does_not_check_out_is_not_visited(client, sns, case):
    if case == "foreign-host":
        message = confirmation(sns, subscribe_url=f"https://127.0.0.1:{free_port()}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t")
    elif case == "other-action":
        message = confirmation(sns, subscribe_url=f"{sns['base']}/?Action=Unsubscribe&TopicArn={TOPIC}&Token=t")
    elif case == "other-topic":
        message = confirmation(sns, subscribe_url=f"{sns['base']}/?Action=ConfirmSubscription&TopicArn={TOPIC}-other&Token=t")
    elif case == "http":
        message = confirmation(sns, subscribe_url=sns["base"].replace("https", "http") + f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t")
    else:
        message = confirmation(sns, topic="arn:aws:sns:us-east-1:999999999999:someone-elses")
    response = await deliver(client, message)
    assert response.status == 401
    assert not any(r.startswith("/?") for r in sns["requests"])


async def test_unsubscribe_confirmation_is_acknowledged_and_records_nothing(client, sns):
    message = confirmation(sns, "UnsubscribeConfirmation")
    response = await deliver(client, message)
    assert response.status == 200 and (await response.json()) == {"recorded": 0}
    assert not any(r.startswith("/?") for r in sns["requests"])


async def test_without_a_topic_allow_list_the_ses_webhook_refuses_everything(make_email_app, client_for, settings, sns):
    # SNS signs any AWS account's topic alike: without the list, anyone could feed bounces in.
    client = await client_for(make_email_app(settings(ses_topic_arns=[])))
    for message in (notification(sns, ses_bounce("victim@example.com")), confirmation(sns)):
        response = await deliver(client, message)
        assert response.status == 401 and "ses_topic_arns" in (await response.json())["error"]
    assert sns["requests"] == [] and await events(client.server.app) == []


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
    "https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242f4a1b3c1d3e0.pem",
])
def test_the_shipped_cert_host_pattern_accepts_sns_hosts(url):
    assert check_cert_url(url, SHIPPED_HOST) == url


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-x.pem",
    "https://evilsns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.txt",
    "https://localhost/SimpleNotificationService-x.pem",
])
def test_the_shipped_cert_host_pattern_refuses_everything_else(url):
    with pytest.raises(WebhookRejected):
        check_cert_url(url, SHIPPED_HOST)


async def test_with_the_shipped_host_pattern_a_local_certificate_is_never_fetched(make_email_app, client_for, settings, sns):
    client = await client_for(make_email_app(settings(ses_cert_host=SHIPPED_HOST)))
    response = await deliver(client, notification(sns, ses_bounce("victim@example.com")))
    assert response.status == 401 and "SNS host" in (await response.json())["error"]
    assert sns["requests"] == [] and await suppressed(client) == []


# -- Mailgun --------------------------------------------------------------------------------


def mailgun_signed(event_data: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None, token: str | None = None) -> dict:
    """The documented webhook body: signature {timestamp, token, signature} beside event-data."""
    timestamp_s = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]  # 50 characters, as Mailgun's
    signature = hmac.new(key.encode(), (timestamp_s + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp_s, "token": token, "signature": signature}, "event-data": event_data}


def mailgun_event(event: str, recipient: str, message_id: str, **extra) -> dict:
    data = {
        "id": uuid.uuid4().hex[:22], "timestamp": time.time(), "log-level": "info", "event": event,
        "envelope": {"sender": "noreply@mg.example.com", "transport": "smtp", "targets": recipient},
        "message": {"headers": {"to": recipient, "message-id": message_id, "from": "Plugboard <noreply@mg.example.com>", "subject": "Welcome"},
                    "attachments": [], "size": 2048},
        "recipient": recipient, "recipient-domain": recipient.partition("@")[2], "campaigns": [], "tags": [], "user-variables": {},
    }
    data.update(extra)
    return data


async def test_mailgun_events_end_in_suppression_and_counts(client, tmp_path):
    app = client.server.app
    # A message this server sent (outbox): its Message-ID leads back to the template.
    sent = await app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"})
    mid = sent.message_id.strip("<>")  # Mailgun reports message-id without angle brackets
    payloads = [
        mailgun_event("delivered", "ann@example.com", mid, **{"delivery-status": {"code": 250, "message": "OK", "description": ""}}),
        mailgun_event("opened", "ann@example.com", mid),
        mailgun_event("failed", "gone@example.com", "x1@mg.example.com", severity="permanent", reason="bounce",
                      **{"log-level": "error", "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist", "description": ""},
                         "user-variables": {"plugboard_template": "newsletter"}}),
        mailgun_event("failed", "later@example.com", "x2@mg.example.com", severity="temporary", reason="generic",
                      **{"log-level": "warn", "delivery-status": {"code": 452, "message": "4.2.2 mailbox full", "description": ""},
                         "user-variables": {"plugboard_template": "newsletter"}}),
        mailgun_event("complained", "angry@example.com", mid, **{"log-level": "warn"}),
    ]
    for data in payloads:
        response = await client.post("/email/webhooks/mailgun", json=mailgun_signed(data))
        assert response.status == 200, await response.text()
    recorded = [(e.event, e.address, e.template) for e in await events(app)]
    assert recorded == [("sent", "ann@example.com", "welcome"), ("delivered", "ann@example.com", "welcome"), ("opened", "ann@example.com", "welcome"),
                        ("bounced:hard", "gone@example.com", "newsletter"), ("bounced:soft", "later@example.com", "newsletter"),
                        ("complained", "angry@example.com", "welcome")]
    assert await suppressed(client) == ["angry@example.com", "gone@example.com"]
    assert await stats(client) == {("welcome", "sent"): 1, ("welcome", "delivered"): 1, ("welcome", "opened"): 1, ("welcome", "complained"): 1,
                                   ("newsletter", "bounced"): 2}
    refused = await gql(client, SEND, {"to": "angry@example.com"})
    assert refused["errors"][0]["extensions"]["code"] == "EMAIL_SUPPRESSED"


async def test_mailgun_token_is_used_once_even_re_signed(client):
    data = mailgun_event("failed", "gone@example.com", "x@mg.example.com", severity="permanent")
    first = mailgun_signed(data, timestamp=int(time.time()) - 10)
    assert (await client.post("/email/webhooks/mailgun", json=first)).status == 200
    # The same token with a fresh timestamp and a valid signature over both: still a replay.
    again = mailgun_signed(mailgun_event("complained", "victim@example.com", "y@mg.example.com"), token=first["signature"]["token"])
    response = await client.post("/email/webhooks/mailgun", json=again)
    assert response.status == 401 and "replayed" in (await response.json())["error"]
    assert [e.address for e in await events(client.server.app)] == ["gone@example.com"]


@pytest.mark.parametrize("case", ["stale", "future", "body-swapped", "signature-of-token-only", "uppercase-key"])
async def test_mailgun_refusals(client, case):
    data = mailgun_event("failed", "victim@example.com", "x@mg.example.com", severity="permanent")
    if case == "stale":
        payload = mailgun_signed(data, timestamp=int(time.time()) - 3600)
    elif case == "future":
        payload = mailgun_signed(data, timestamp=int(time.time()) + 3600)
    elif case == "body-swapped":
        # A genuine signature is over timestamp + token only: the replay cache is what stops reuse
        # with another event body (above); a token seen once is never accepted again.
        genuine = mailgun_signed(mailgun_event("delivered", "a@example.com", "x@mg.example.com"))
        assert (await client.post("/email/webhooks/mailgun", json=genuine)).status == 200
        payload = {**genuine, "event-data": data}
    elif case == "signature-of-token-only":
        payload = mailgun_signed(data)
        payload["signature"]["signature"] = hmac.new(MAILGUN_KEY.encode(), payload["signature"]["token"].encode(), hashlib.sha256).hexdigest()
    else:
        payload = mailgun_signed(data, key=MAILGUN_KEY.upper())
    response = await client.post("/email/webhooks/mailgun", json=payload)
    assert response.status == 401
    assert "victim@example.com" not in [e.address for e in await events(client.server.app)]
    assert await suppressed(client) == []


async def test_mailgun_signed_but_without_event_data_is_a_bad_request(client):
    payload = mailgun_signed({})
    del payload["event-data"]
    response = await client.post("/email/webhooks/mailgun", json=payload)
    assert response.status == 400
    assert await events(client.server.app) == []
