"""The ses mailer against moto in server mode (SES v2 SendEmail with raw content)."""

from __future__ import annotations

import email
import email.policy

import pytest

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.providers.config import SesConfig
from plugboard.plugins.email.providers.ses import SesMailer
from plugboard.providers.mailer import MailerError, build_message
from plugboard.testing_servers import free_port

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def ses_options(moto_url):
    return {"region": REGION, "endpoint_url": moto_url, "access_key_id": "testing", "secret_access_key": "testing"}


async def verify_identity(moto_url: str, identity: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("sesv2", region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing") as client:
        await client.create_email_identity(EmailIdentity=identity)


def sent_messages() -> list:
    # ThreadedMotoServer runs in this process: its backend is readable here.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


async def test_ses_sends_raw_mime(moto_url, ses_options):
    await verify_identity(moto_url, "books@example.com")
    mailer = SesMailer(SesConfig(**ses_options))
    await mailer.start()
    before = len(sent_messages())
    try:
        msg = build_message(sender="Books <books@example.com>", to=["ann@example.com"], subject="Héllo", text="plain", html="<p>h</p>",
                            headers={"X-Plugboard-Template": "welcome", "List-Unsubscribe": "<https://x.example/u>"})
        result = await mailer.send(msg, bcc=["hidden@example.com"])
    finally:
        await mailer.close()
    assert result.accepted == ["ann@example.com", "hidden@example.com"]
    [sent] = sent_messages()[before:]
    raw = sent.raw_data.encode() if isinstance(sent.raw_data, str) else sent.raw_data
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] == msg["Message-ID"] and parsed["Subject"] == "Héllo"
    assert parsed["List-Unsubscribe"] == "<https://x.example/u>"
    assert set(sent.destinations) >= {"ann@example.com", "hidden@example.com"}


async def test_ses_refuses_an_unverified_sender_permanently(ses_options):
    mailer = SesMailer(SesConfig(**ses_options))
    await mailer.start()
    try:
        msg = build_message(sender="nobody@unverified.example", to=["ann@example.com"], subject="s", text="t")
        with pytest.raises(MailerError, match="SES answered 400 MessageRejected") as e:
            await mailer.send(msg)
    finally:
        await mailer.close()
    assert e.value.permanent


async def test_ses_unreachable_is_temporary():
    mailer = SesMailer(SesConfig(region=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="a", secret_access_key="b", timeout=2.0))
    await mailer.start()
    try:
        msg = build_message(sender="books@example.com", to=["ann@example.com"], subject="s", text="t")
        with pytest.raises(MailerError, match="cannot reach SES") as e:
            await mailer.send(msg)
    finally:
        await mailer.close()
    assert not e.value.permanent


async def test_ses_as_the_mailer_service_through_the_queue(make_email_app, start_app, moto_url, ses_options):
    from email_testkit import wait_job

    await verify_identity(moto_url, "shop@example.com")
    app = await start_app(make_email_app(
        {"services": {"mailer": {"provider": "ses", **ses_options}}, "email": {"from_address": "Shop <shop@example.com>"}},
        ["realtime", "jobs", "email"],
    ))
    before = len(sent_messages())
    outcome = await app[EMAIL].send("ann@example.com", "order-confirmation", {"username": "Ann", "orderNumber": "A-1", "items": [], "total": "$0"})
    job = await wait_job(app, outcome.job_id)
    assert job.status.value == "COMPLETED", job.error
    [sent] = sent_messages()[before:]
    assert "Your order A-1 is confirmed" in (sent.raw_data if isinstance(sent.raw_data, str) else sent.raw_data.decode())
