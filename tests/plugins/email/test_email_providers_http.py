"""The sendgrid and mailgun mailers against verifying local servers (email_fakes)."""

from __future__ import annotations


import pytest
from email_fakes import MAILGUN_DOMAIN, MAILGUN_KEY, SENDGRID_KEY, MailgunFake, SendgridFake

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.providers.config import MailgunConfig, SendgridConfig
from plugboard.plugins.email.providers.mailgun import MailgunMailer
from plugboard.plugins.email.providers.sendgrid import SendgridMailer
from plugboard.providers.mailer import MailerError, build_message
from plugboard.testing_servers import free_port


def message(**extra):
    return build_message(
        sender="Books <books@example.com>", to=["Ann <ann@example.com>"], cc=["cc@example.com"], reply_to=["help@example.com"],
        subject="Héllo", text="plain", html="<p>html</p>",
        headers={"X-Plugboard-Template": "newsletter", "List-Unsubscribe": "<https://x.example/u/1>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        **extra,
    )


@pytest.fixture
async def sendgrid(aiohttp_server):
    fake = SendgridFake()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def mailgun(aiohttp_server):
    fake = MailgunFake()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


async def started(mailer):
    await mailer.start()
    return mailer


async def test_sendgrid_mail_send_request(sendgrid):
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=sendgrid.url)))
    try:
        msg = message()
        result = await mailer.send(msg, bcc=["hidden@example.com"])
    finally:
        await mailer.close()
    assert result.accepted == ["ann@example.com", "cc@example.com", "hidden@example.com"]
    [body] = sendgrid.requests
    assert body["personalizations"] == [{"to": [{"email": "ann@example.com", "name": "Ann"}], "cc": [{"email": "cc@example.com"}], "bcc": [{"email": "hidden@example.com"}]}]
    assert body["from"] == {"email": "books@example.com", "name": "Books"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert body["subject"] == "Héllo"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][0]["value"].strip() == "plain"
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "X-Plugboard-Template" not in body["headers"] and "Message-ID" not in body["headers"]
    assert body["custom_args"] == {"plugboard_message_id": str(msg["Message-ID"]).strip("<>"), "plugboard_template": "newsletter"}


async def test_sendgrid_sandbox_mode(sendgrid):
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=sendgrid.url, sandbox=True)))
    try:
        await mailer.send(message())
    finally:
        await mailer.close()
    assert sendgrid.requests[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}


@pytest.mark.parametrize("status, permanent", [(400, True), (413, True), (429, False), (500, False), (503, False)])
async def test_sendgrid_errors_are_classified(sendgrid, status, permanent):
    sendgrid.fail_with = status
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=sendgrid.url)))
    try:
        with pytest.raises(MailerError, match=f"SendGrid answered {status}") as e:
            await mailer.send(message())
    finally:
        await mailer.close()
    assert e.value.permanent is permanent


async def test_sendgrid_bad_key_and_timeouts_and_refused_connections(sendgrid):
    mailer = await started(SendgridMailer(SendgridConfig(api_key="SG.wrong", base_url=sendgrid.url)))
    with pytest.raises(MailerError, match="401: The provided authorization grant is invalid") as e:
        await mailer.send(message())
    assert e.value.permanent
    await mailer.close()
    sendgrid.delay = 2
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=sendgrid.url, timeout=0.3)))
    with pytest.raises(MailerError, match="cannot reach SendGrid: TimeoutError") as e:
        await mailer.send(message())
    assert not e.value.permanent
    await mailer.close()
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(MailerError, match="cannot reach SendGrid") as e:
        await mailer.send(message())
    assert not e.value.permanent
    await mailer.close()


async def test_sendgrid_validation_error_from_the_api(sendgrid):
    mailer = await started(SendgridMailer(SendgridConfig(api_key=SENDGRID_KEY, base_url=sendgrid.url)))
    try:
        # The same address in to and cc: SendGrid refuses the personalization.
        msg = build_message(sender="b@example.com", to=["a@example.com"], cc=["a@example.com"], subject="s", text="t")
        with pytest.raises(MailerError, match="should be unique") as e:
            await mailer.send(msg)
    finally:
        await mailer.close()
    assert e.value.permanent


async def test_mailgun_messages_request(mailgun):
    mailer = await started(MailgunMailer(MailgunConfig(api_key=MAILGUN_KEY, domain=MAILGUN_DOMAIN, base_url=mailgun.url, test_mode=True)))
    try:
        msg = message()
        result = await mailer.send(msg, bcc=["hidden@example.com"])
    finally:
        await mailer.close()
    assert result.accepted == ["ann@example.com", "cc@example.com", "hidden@example.com"]
    [fields] = mailgun.requests
    assert fields["from"] == ["Books <books@example.com>"]
    assert fields["to"] == ["Ann <ann@example.com>"] and fields["cc"] == ["cc@example.com"] and fields["bcc"] == ["hidden@example.com"]
    assert fields["subject"] == ["Héllo"]
    assert fields["text"][0].strip() == "plain" and fields["html"][0].strip() == "<p>html</p>"
    assert fields["h:Reply-To"] == ["help@example.com"]
    assert fields["h:Message-Id"] == [str(msg["Message-ID"])]
    assert fields["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    assert fields["v:plugboard_template"] == ["newsletter"] and fields["o:tag"] == ["newsletter"]
    assert fields["o:testmode"] == ["yes"]


def test_mailgun_regions():
    assert MailgunConfig(api_key="k", domain="mg.example.com").url() == "https://api.mailgun.net/v3/mg.example.com/messages"
    assert MailgunConfig(api_key="k", domain="mg.example.com", region="eu").url() == "https://api.eu.mailgun.net/v3/mg.example.com/messages"


@pytest.mark.parametrize(
    "config, fail_with, match, permanent",
    [
        ({"api_key": "wrong"}, None, "401: Forbidden", True),
        ({"domain": "unknown.example.com"}, None, "404: Domain not found", True),
        ({}, 429, "429", False),
        ({}, 500, "500", False),
    ],
)
async def test_mailgun_errors_are_classified(mailgun, config, fail_with, match, permanent):
    mailgun.fail_with = fail_with
    options = {"api_key": MAILGUN_KEY, "domain": MAILGUN_DOMAIN, "base_url": mailgun.url, **config}
    mailer = await started(MailgunMailer(MailgunConfig(**options)))
    try:
        with pytest.raises(MailerError, match=match) as e:
            await mailer.send(message())
    finally:
        await mailer.close()
    assert e.value.permanent is permanent


async def test_sendgrid_selected_as_the_mailer_service(make_email_app, start_app, sendgrid):
    app = await start_app(make_email_app({"services": {"mailer": {"provider": "sendgrid", "api_key": SENDGRID_KEY, "base_url": sendgrid.url}}, "email": {"provider": "sendgrid", "from_address": "Books <books@example.com>"}}))
    outcome = await app[EMAIL].send("ann@example.com", "newsletter", {"title": "T", "articles": []})
    assert outcome.status == "sent"
    [body] = sendgrid.requests
    assert body["headers"]["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/email/unsubscribe/")
    assert body["custom_args"]["plugboard_template"] == "newsletter"
    sendgrid.fail_with = 400
    from plugboard.plugins.email.service import EmailError

    with pytest.raises(EmailError, match="refused the message: SendGrid answered 400") as e:
        await app[EMAIL].send("bob@example.com", "welcome", {"username": "Bob"})
    assert e.value.code == "EMAIL_NOT_SENT"


async def test_a_slow_provider_times_out_in_the_request(make_email_app, start_app, mailgun):
    mailgun.delay = 2
    mailer = {"provider": "mailgun", "api_key": MAILGUN_KEY, "domain": MAILGUN_DOMAIN, "base_url": mailgun.url}
    app = await start_app(make_email_app({"services": {"mailer": mailer}, "email": {"send_timeout": "0.3s"}}))
    from plugboard.plugins.email.service import EmailError

    with pytest.raises(EmailError, match="did not answer within 0.3s"):
        await app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"})
