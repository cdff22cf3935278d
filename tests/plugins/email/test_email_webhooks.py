"""Signed provider webhooks: SendGrid (ECDSA), Mailgun (HMAC), SES through SNS (certificate over
HTTPS from a local CA). Bad, missing, stale and replayed signatures get 401 and record nothing;
hard bounces and complaints suppress the address."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from aiohttp import web
from email_testkit import events, gql, make_cert, sns_sign

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.service import EmailError
from plugboard.testing_servers import free_port

MAILGUN_SIGNING_KEY = "mailgun-signing-key"


@pytest.fixture(scope="module")
def sendgrid_keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def sendgrid_headers(private, body: bytes, timestamp: str | None = None) -> dict[str, str]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    timestamp = timestamp or str(int(time.time()))
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


def mailgun_payload(event_data: dict, *, key: str = MAILGUN_SIGNING_KEY, timestamp: str | None = None, token: str | None = None) -> dict:
    timestamp = timestamp or str(int(time.time()))
    token = token or uuid.uuid4().hex
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


@pytest.fixture
async def sns_cert(tls_files):
    """An SNS-like signing certificate served over HTTPS (local CA) at https://localhost:<port>/...pem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from cryptography import x509

    ca_cert = x509.load_pem_x509_certificate(tls_files.ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_cert("sns.amazonaws.com", tls_files.ca_key, ca_cert.subject, key, ca=False)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    fetched = []

    async def serve(request):
        fetched.append(request.path)
        return web.Response(body=pem, content_type="application/x-pem-file")

    async def subscribe(request):
        fetched.append("confirm:" + request.query.get("Token", ""))
        return web.Response(text="<ConfirmSubscriptionResponse/>")

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-test.pem", serve)
    app.router.add_get("/confirm", subscribe)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls_files.server_context())
    await site.start()
    try:
        yield {"key": key, "url": f"https://localhost:{port}/SimpleNotificationService-test.pem", "base": f"https://localhost:{port}", "fetched": fetched}
    finally:
        await runner.cleanup()


def sns_message(sns_cert, ses_event: dict, *, type_: str = "Notification", version: str = "2", topic: str = "arn:aws:sns:eu-west-1:123456789012:ses-events", **extra) -> dict:
    message = {
        "Type": type_, "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": json.dumps(ses_event),
        "Timestamp": extra.pop("Timestamp", None) or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "SigningCertURL": sns_cert["url"], **extra,
    }
    return sns_sign(message, sns_cert["key"], version)


@pytest.fixture
async def client(make_email_app, client_for, sendgrid_keys, tls_files):
    _, public = sendgrid_keys
    app = make_email_app({"email": {
        "features": {"analytics": True},
        "webhooks": {"sendgrid_public_key": public, "mailgun_signing_key": MAILGUN_SIGNING_KEY, "ses_cert_host": "localhost",
                     "ses_ca_file": str(tls_files.ca_cert), "ses_topic_arns": ["arn:aws:sns:eu-west-1:123456789012:ses-events"]},
    }})
    return await client_for(app)


SENDGRID_EVENTS = [
    {"email": "hard@example.com", "event": "bounce", "type": "bounce", "reason": "550 5.1.1 unknown user", "timestamp": 1764000000, "sg_message_id": "x.1", "plugboard_template": "welcome"},
    {"email": "soft@example.com", "event": "bounce", "type": "blocked", "reason": "451 try later", "timestamp": 1764000000},
    {"email": "spam@example.com", "event": "spamreport", "timestamp": 1764000000},
    {"email": "ok@example.com", "event": "delivered", "timestamp": 1764000000, "plugboard_template": "welcome"},
    {"email": "ok@example.com", "event": "open", "timestamp": 1764000000, "plugboard_template": "welcome"},
    {"email": "ok@example.com", "event": "processed", "timestamp": 1764000000},
]


async def test_sendgrid_webhook_records_events_and_suppresses(client, sendgrid_keys):
    private, _ = sendgrid_keys
    body = json.dumps(SENDGRID_EVENTS).encode()
    response = await client.post("/email/webhooks/sendgrid", data=body, headers=sendgrid_headers(private, body))
    assert response.status == 200 and (await response.json()) == {"recorded": 5}
    app = client.server.app
    kinds = [(e.event, e.address) for e in await events(app)]
    assert kinds == [("bounced:hard", "hard@example.com"), ("bounced:soft", "soft@example.com"), ("complained", "spam@example.com"),
                     ("delivered", "ok@example.com"), ("opened", "ok@example.com")]
    suppressed = await gql(client, "{ emailSuppressions { address reason } }")
    assert sorted((s["address"], s["reason"]) for s in suppressed["data"]["emailSuppressions"]) == [
        ("hard@example.com", "bounced-hard"), ("spam@example.com", "complained")]
    with pytest.raises(EmailError, match="hard@example.com is suppressed"):
        await app[EMAIL].send("hard@example.com", "welcome", {"username": "H"})
    await app[EMAIL].send("soft@example.com", "welcome", {"username": "S"})


async def test_sendgrid_replay_is_refused(client, sendgrid_keys):
    private, _ = sendgrid_keys
    body = json.dumps(SENDGRID_EVENTS[:1]).encode()
    headers = sendgrid_headers(private, body)
    assert (await client.post("/email/webhooks/sendgrid", data=body, headers=headers)).status == 200
    replay = await client.post("/email/webhooks/sendgrid", data=body, headers=headers)
    assert replay.status == 401 and "replayed" in (await replay.json())["error"]
    assert len(await events(client.server.app)) == 1


@pytest.mark.parametrize("case", ["missing", "bad", "altered", "stale", "other-key"])
async def test_sendgrid_bad_signatures(client, sendgrid_keys, case):
    from cryptography.hazmat.primitives.asymmetric import ec

    private, _ = sendgrid_keys
    body = json.dumps(SENDGRID_EVENTS).encode()
    headers = sendgrid_headers(private, body)
    if case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "bad":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(b"nonsense").decode()
    elif case == "altered":
        body = body.replace(b"hard@example.com", b"victim@example.com")
    elif case == "stale":
        headers = sendgrid_headers(private, body, timestamp=str(int(time.time()) - 3600))
    elif case == "other-key":
        headers = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body)
    response = await client.post("/email/webhooks/sendgrid", data=body, headers=headers)
    assert response.status == 401
    assert await events(client.server.app) == []
    assert (await gql(client, "{ emailSuppressions { address } }"))["data"]["emailSuppressions"] == []


async def test_mailgun_webhook(client):
    data = {"event": "failed", "severity": "permanent", "recipient": "gone@example.com", "timestamp": time.time(),
            "delivery-status": {"description": "No such mailbox"}, "user-variables": {"plugboard_template": "newsletter"}}
    payload = mailgun_payload(data)
    response = await client.post("/email/webhooks/mailgun", json=payload)
    assert response.status == 200
    replay = await client.post("/email/webhooks/mailgun", json=payload)
    assert replay.status == 401
    temporary = mailgun_payload({**data, "severity": "temporary", "recipient": "later@example.com"})
    assert (await client.post("/email/webhooks/mailgun", json=temporary)).status == 200
    complained = mailgun_payload({"event": "complained", "recipient": "angry@example.com", "timestamp": time.time()})
    assert (await client.post("/email/webhooks/mailgun", json=complained)).status == 200
    app = client.server.app
    assert [(e.event, e.address, e.template) for e in await events(app)] == [
        ("bounced:hard", "gone@example.com", "newsletter"), ("bounced:soft", "later@example.com", "newsletter"), ("complained", "angry@example.com", None)]
    rows = (await gql(client, "{ emailSuppressions { address } }"))["data"]["emailSuppressions"]
    assert sorted(r["address"] for r in rows) == ["angry@example.com", "gone@example.com"]


@pytest.mark.parametrize("case", ["missing", "bad", "stale", "wrong-key", "not-json"])
async def test_mailgun_bad_signatures(client, case):
    data = {"event": "failed", "severity": "permanent", "recipient": "gone@example.com"}
    payload = mailgun_payload(data)
    if case == "missing":
        del payload["signature"]
    elif case == "bad":
        payload["signature"]["signature"] = "0" * 64
    elif case == "stale":
        payload = mailgun_payload(data, timestamp=str(int(time.time()) - 3600))
    elif case == "wrong-key":
        payload = mailgun_payload(data, key="another-key")
    body = b"{not json" if case == "not-json" else json.dumps(payload).encode()
    response = await client.post("/email/webhooks/mailgun", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 401
    assert await events(client.server.app) == []


SES_BOUNCE = {
    "eventType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "bouncedRecipients": [{"emailAddress": "nobody@example.com"}]},
    "mail": {"messageId": "ses-1", "destination": ["nobody@example.com"], "commonHeaders": {"messageId": "<abc@example.com>"}, "tags": {"plugboard_template": ["welcome"]}},
}


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_sns_notifications(client, sns_cert, version):
    message = sns_message(sns_cert, SES_BOUNCE, version=version)
    response = await client.post("/email/webhooks/ses", json=message)
    assert response.status == 200, await response.text()
    complaint = {"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.com"}], "complaintFeedbackType": "abuse"}, "mail": {"messageId": "ses-2"}}
    assert (await client.post("/email/webhooks/ses", json=sns_message(sns_cert, complaint, version=version))).status == 200
    delivery = {"eventType": "Delivery", "delivery": {"recipients": ["ok@example.com"]}, "mail": {"messageId": "ses-3"}}
    assert (await client.post("/email/webhooks/ses", json=sns_message(sns_cert, delivery, version=version))).status == 200
    app = client.server.app
    assert [(e.event, e.address, e.template) for e in await events(app)] == [
        ("bounced:hard", "nobody@example.com", "welcome"), ("complained", "angry@example.com", None), ("delivered", "ok@example.com", None)]
    rows = (await gql(client, "{ emailSuppressions { address } }"))["data"]["emailSuppressions"]
    assert sorted(r["address"] for r in rows) == ["angry@example.com", "nobody@example.com"]
    # The certificate was fetched once and then cached.
    assert sns_cert["fetched"].count("/SimpleNotificationService-test.pem") == 1
    replay = await client.post("/email/webhooks/ses", json=message)
    assert replay.status == 401


async def test_ses_subscription_confirmation(client, sns_cert):
    topic = "arn:aws:sns:eu-west-1:123456789012:ses-events"
    message = sns_message(sns_cert, {}, type_="SubscriptionConfirmation", Token="tok-1",
                          SubscribeURL=sns_cert["base"] + f"/confirm?Action=ConfirmSubscription&TopicArn={topic}&Token=tok-1")
    response = await client.post("/email/webhooks/ses", json=message)
    assert response.status == 200
    assert "confirm:tok-1" in sns_cert["fetched"]


@pytest.mark.parametrize("case", ["altered", "bad-signature", "http-cert", "foreign-host", "other-topic", "unknown-version", "missing-signature", "other-signing-key", "stale"])
async def test_ses_bad_messages(client, sns_cert, tls_files, case):
    message = sns_message(sns_cert, SES_BOUNCE)
    if case == "altered":
        message["Message"] = message["Message"].replace("nobody@", "victim@")
    elif case == "bad-signature":
        message["Signature"] = base64.b64encode(b"x" * 256).decode()
    elif case == "http-cert":
        message["SigningCertURL"] = sns_cert["url"].replace("https://", "http://")
    elif case == "foreign-host":
        message["SigningCertURL"] = "https://attacker.example.com/SimpleNotificationService-test.pem"
    elif case == "other-topic":
        message = sns_message(sns_cert, SES_BOUNCE, topic="arn:aws:sns:eu-west-1:999999999999:other")
    elif case == "unknown-version":
        message["SignatureVersion"] = "3"
    elif case == "missing-signature":
        del message["Signature"]
    elif case == "stale":
        message = sns_message(sns_cert, SES_BOUNCE, Timestamp="2026-01-01T00:00:00.000Z")
    elif case == "other-signing-key":
        # Signed by a key other than the certificate's.
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        message = sns_sign(message, other, "2")
    response = await client.post("/email/webhooks/ses", json=message)
    assert response.status == 401
    assert await events(client.server.app) == []


async def test_ses_certificate_from_an_untrusted_https_server(make_email_app, client_for, sns_cert):
    # Without the test CA, the certificate's HTTPS server is not trusted: nothing is fetched or recorded.
    app = make_email_app({"email": {"webhooks": {"ses_cert_host": "localhost", "ses_topic_arns": ["arn:aws:sns:eu-west-1:123456789012:ses-events"]}}})
    client = await client_for(app)
    response = await client.post("/email/webhooks/ses", json=sns_message(sns_cert, SES_BOUNCE))
    assert response.status == 401 and "cannot fetch the signing certificate" in (await response.json())["error"]
    assert await events(client.server.app) == []
