"""send-email: the outbox mailer, and the smtp mailer against a real aiosmtpd server."""

from __future__ import annotations

import email
import email.policy

import pytest
from builtin_testkit import FakeJob

from plugboard.providers.mailer import MailerError, build_message
from plugboard.providers.smtp import SmtpConfig, SmtpMailer
from plugboard.tasks import PermanentError, retry_policy


def _smtp(server, **extra) -> dict:
    """App settings: the default mailer service is ``server``."""
    return {"services": {"mailer": {"provider": "smtp", "host": server.host, "port": server.port, "starttls": False, "timeout": "5s", **extra}}}


async def test_outbox_writes_rfc5322_files(make_builtin_app, start_app, tmp_path):
    app, tasks = make_builtin_app(jobs={"email": {"from_address": "Books <books@example.com>"}})
    await start_app(app)
    job = FakeJob(app)
    result = await tasks["send-email"](
        job,
        to=["Ann <ann@example.com>", "bob@example.com"],
        subject="Héllo, wörld",
        text="plain body",
        html="<p>html body</p>",
        reply_to="help@example.com",
        bcc="hidden@example.com",
        headers={"X-Campaign": "spring"},
    )
    assert result["accepted"] == ["ann@example.com", "bob@example.com", "hidden@example.com"]
    files = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(files) == 1
    raw = files[0].read_bytes()
    assert b"\r\n" in raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "Books <books@example.com>"
    assert message["To"] == "Ann <ann@example.com>, bob@example.com"
    assert message["Subject"] == "Héllo, wörld"
    assert message["Reply-To"] == "help@example.com"
    assert message["X-Campaign"] == "spring"
    assert message["Message-ID"] == result["message_id"]
    assert message["Bcc"] is None and message["X-Outbox-Bcc"] == "hidden@example.com"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().strip() == "plain body"
    assert message.get_body(("html",)).get_content().strip() == "<p>html body</p>"
    assert job.reported == []  # send-email reports no midpoint (a write and an event per message); COMPLETED sets 100


async def test_from_argument_and_outbox_dir(make_builtin_app, start_app, tmp_path):
    app, tasks = make_builtin_app({"services": {"mailer": {"provider": "outbox", "dir": "mail"}}})
    await start_app(app)
    await tasks["send-email"](FakeJob(app), to="a@example.com", subject="s", html="<b>x</b>", **{"from": "me@example.org"})
    [path] = (tmp_path / "mail").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["From"] == "me@example.org"
    assert message.get_content_type() == "text/html"


@pytest.mark.parametrize(
    "args, message",
    [
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "not an email address"),
        ({"to": "a@example.com", "subject": "s"}, "give text, html or both"),
        ({"to": "a@example.com", "subject": "s\nBcc: evil@example.com", "text": "t"}, "line breaks"),
        ({"to": "a@example.com\r\nBcc: evil@example.com", "subject": "s", "text": "t"}, "line breaks"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "headers": {"From": "x@example.com"}}, "set from the job"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\r\nBcc: e@example.com"}}, "not an acceptable header"),
        ({"to": [], "subject": "s", "text": "t"}, "no recipients"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "from": "a@example.com, b@example.com"}, "expected one address"),
    ],
)
async def test_bad_arguments_are_permanent(make_builtin_app, start_app, tmp_path, args, message):
    app, tasks = make_builtin_app()
    await start_app(app)
    with pytest.raises(PermanentError, match=message):
        await tasks["send-email"](FakeJob(app), **args)
    assert not list((tmp_path / "var" / "outbox").glob("*.eml"))


async def test_smtp_delivers(make_builtin_app, start_app, smtp_server):
    app, tasks = make_builtin_app(_smtp(smtp_server))
    await start_app(app)
    result = await tasks["send-email"](
        FakeJob(app), to="ann@example.com", cc="carl@example.com", bcc="dora@example.com", subject="Hi", text="Hello Ann"
    )
    assert result["accepted"] == ["ann@example.com", "carl@example.com", "dora@example.com"]
    assert result["refused"] == {}
    [got] = smtp_server.messages
    assert got.mail_from == "noreply@localhost"
    assert got.rcpt_tos == ["ann@example.com", "carl@example.com", "dora@example.com"]
    assert got.message["Subject"] == "Hi"
    assert got.message["Bcc"] is None
    assert got.message.get_content().strip() == "Hello Ann"


async def test_smtp_rejected_recipient_is_permanent(make_builtin_app, start_app, smtp_server):
    app, tasks = make_builtin_app(_smtp(smtp_server))
    await start_app(app)
    with pytest.raises(PermanentError, match="550"):
        await tasks["send-email"](FakeJob(app), to="reject@example.com", subject="s", text="t")
    assert smtp_server.messages == []


async def test_smtp_partly_rejected_is_delivered_with_the_refusals(make_builtin_app, start_app, smtp_server):
    app, tasks = make_builtin_app(_smtp(smtp_server))
    await start_app(app)
    result = await tasks["send-email"](FakeJob(app), to=["ok@example.com", "reject@example.com"], subject="s", text="t")
    assert result["accepted"] == ["ok@example.com"]
    assert result["refused"]["reject@example.com"].startswith("550")
    assert smtp_server.messages[0].rcpt_tos == ["ok@example.com"]


async def test_smtp_temporary_refusal_retries(make_builtin_app, start_app, smtp_server):
    app, tasks = make_builtin_app(_smtp(smtp_server))
    await start_app(app)
    with pytest.raises(MailerError) as info:
        await tasks["send-email"](FakeJob(app), to="busy@example.com", subject="s", text="t")
    assert not isinstance(info.value, PermanentError) and info.value.permanent is False
    assert "451" in str(info.value)


async def test_smtp_unreachable_retries():
    from plugboard.testing_servers import free_port

    mailer = SmtpMailer(SmtpConfig(host="127.0.0.1", port=free_port(), starttls=False, timeout=2.0))
    message = build_message(sender="a@example.com", to=["b@example.com"], subject="s", text="t")
    with pytest.raises(MailerError) as info:
        await mailer.send(message)
    assert info.value.permanent is False


async def test_smtp_required_starttls_unsupported_is_permanent(make_builtin_app, start_app, smtp_server):
    app, tasks = make_builtin_app(_smtp(smtp_server, starttls=True))
    await start_app(app)
    with pytest.raises(PermanentError):
        await tasks["send-email"](FakeJob(app), to="ann@example.com", subject="s", text="t")


def test_send_email_declares_its_retry_strategy(make_builtin_app):
    _app, tasks = make_builtin_app()
    policy = retry_policy(tasks["send-email"])
    assert policy.backoff == 5.0


def test_smtp_settings_are_validated(make_builtin_app):
    from builtin_testkit import builtin_config

    from plugboard.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_builtin_app({"services": {"mailer": {"provider": "smtp", "port": 70000, "password": "hunter2", "tls": True, "starttls": True}}})
    text = str(info.value)
    assert "services.mailer.port = 70000" in text and "hunter2" not in text
    with pytest.raises(ConfigError, match="tls and starttls exclude each other"):
        make_builtin_app({"services": {"mailer": {"provider": "smtp", "tls": True, "starttls": True}}})
    with pytest.raises(ConfigError, match="jobs.email.from_address"):
        builtin_config({"email": {"from_address": "nobody"}})
