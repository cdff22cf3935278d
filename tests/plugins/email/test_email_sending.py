"""Queued sending through the jobs plugin: SMTP with STARTTLS and AUTH (aiosmtpd), at-most-once
delivery with idempotency keys, permanent failures (no retry) and timeouts (retried with backoff)."""

from __future__ import annotations

import asyncio
import time

import pytest

from email_testkit import wait_job

from plugboard.errors import ConfigError
from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.providers.mailer import MailerError
from plugboard.providers.smtp import SmtpConfig
from plugboard.tasks import PermanentError

PLUGINS = ["realtime", "jobs", "email"]
WELCOME = {"username": "Ann"}


@pytest.fixture(params=["records", "redis"])
def ledger_settings(request) -> dict:
    """Every test here runs with the ledger in the records store and in Redis."""
    if request.param == "records":
        return {"email": {"ledger": "records"}}
    return {"redis": {"url": request.getfixturevalue("redis_url")}, "email": {"ledger": "redis"}}


@pytest.fixture
def smtp(ledger_settings):
    def make(server, **extra) -> dict:
        return {**ledger_settings, "services": {"mailer": {"provider": "smtp", "host": server.host, "port": server.port, "timeout": "5s", **extra}}}

    return make


class RedeliveredJob:
    """The runner's view of a job handed to a second worker."""

    def __init__(self, app) -> None:
        self.app, self.id, self.type, self.attempt = app, "redelivered", "send-email", 2

    async def progress(self, percent: float) -> None:
        return None


async def test_queued_send_through_starttls_and_auth(make_email_app, start_app, smtp_factory, tls_files, smtp):
    server = smtp_factory(tls=True, auth=True)
    app = await start_app(make_email_app(smtp(server, user="mailer", password="s3cret", ca_file=str(tls_files.ca_cert)), PLUGINS))
    outcome = await app[EMAIL].send("ann@example.com", "welcome", WELCOME)
    assert outcome.status == "queued"
    job = await wait_job(app, outcome.job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    [received] = server.handler.messages
    assert received["tls"] and received["auth"]
    assert received["to"] == ["ann@example.com"]
    assert received["message"]["Subject"] == "Welcome, Ann!"
    assert received["message"]["Message-ID"] == app[EMAIL].message_id(outcome.key) == job.result["message_id"]


async def test_credentials_never_travel_without_tls(make_email_app, start_app, smtp_factory, smtp):
    with pytest.raises(ConfigError, match="would send the password without TLS"):
        make_email_app(smtp(smtp_factory(), user="mailer", password="s3cret", starttls=False), PLUGINS)
    # starttls: auto with a user requires STARTTLS: a server without it is a permanent failure.
    server = smtp_factory(auth=False)
    app = await start_app(make_email_app(smtp(server, user="mailer", password="s3cret"), PLUGINS))
    outcome = await app[EMAIL].send("ann@example.com", "welcome", WELCOME)
    job = await wait_job(app, outcome.job_id)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "STARTTLS" in job.error
    assert server.handler.messages == []
    assert SmtpConfig(user="u", password="p", starttls=False, allow_plaintext_auth=True).start_tls() is False


async def test_refused_recipient_fails_without_retry(make_email_app, start_app, smtp_server, smtp):
    app = await start_app(make_email_app(smtp(smtp_server, starttls=False), PLUGINS))
    outcome = await app[EMAIL].send("reject@example.com", "welcome", WELCOME)
    job = await wait_job(app, outcome.job_id)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "550" in job.error
    row = await ledger(app, outcome.key)
    assert row.status == "failed" and "550" in row.error


async def test_timeout_is_retried_with_backoff(make_email_app, start_app, smtp_server, smtp):
    smtp_server.handler.delay = 3
    app = await start_app(make_email_app(smtp(smtp_server, starttls=False, timeout="0.5s"), PLUGINS))
    outcome = await app[EMAIL].send("ann@example.com", "welcome", WELCOME)
    job = await wait_job(app, outcome.job_id, statuses=(JobStatus.RETRYING,))
    assert job.attempts == 1 and "Timeout" in job.error
    assert job.run_at is not None and job.run_at > time.time()
    assert (await ledger(app, outcome.key)).status == "retry"


async def ledger(app, key):
    return await app[EMAIL].ledger.get(key)


async def test_a_redelivered_job_never_sends_twice(make_email_app, start_app, smtp_server, smtp):
    app = await start_app(make_email_app(smtp(smtp_server, starttls=False), PLUGINS))
    outcome = await app[EMAIL].send("ann@example.com", "welcome", WELCOME, key="order-17")
    job = await wait_job(app, outcome.job_id)
    assert job.status is JobStatus.COMPLETED
    task = app[JOBS].runner.tasks["send-email"].fn
    # A second worker runs the same job (the first died after the provider accepted).
    again = await task(RedeliveredJob(app), **job.args)
    assert again["already_sent"] is True and again["message_id"] == job.result["message_id"]
    assert len(smtp_server.handler.messages) == 1
    # Asking to send with the same key again queues nothing new.
    same = await app[EMAIL].send("ann@example.com", "welcome", WELCOME, key="order-17")
    assert same.status == "sent" and same.message_id == job.result["message_id"]


def _with_lease(data: dict, lease: str) -> dict:
    return {**data, "email": {**data.get("email", {}), "send_lease": lease}}


async def _noop(conn) -> None:
    return None


ARGS = {"to": "ann@example.com", "subject": "Hello", "text": "Hi", "idempotency_key": "k-1"}


async def test_sending_is_a_lease(make_email_app, start_app, smtp_server, smtp):
    app = await start_app(make_email_app(_with_lease(smtp(smtp_server, starttls=False), "1s"), PLUGINS))
    service, task = app[EMAIL], app[JOBS].runner.tasks["send-email"].fn
    await service.ledger.reserve("k-1", "ann@example.com", "welcome", _noop)
    # A worker claims the key and dies before the mailer answers: the key stays `sending`.
    assert await service.ledger.claim("k-1", service.lease) is None
    # A duplicate delivery within the lease does not send; it is retried (a temporary error).
    with pytest.raises(MailerError, match="another attempt is sending") as e:
        await task(RedeliveredJob(app), **ARGS)
    assert not isinstance(e.value, PermanentError) and e.value.permanent is False
    assert smtp_server.handler.messages == []
    assert (await service.ledger.get("k-1")).status == "sending"
    # After the lease the dead attempt's claim is taken over: sent once, with the key's Message-ID.
    await asyncio.sleep(1.1)
    result = await task(RedeliveredJob(app), **ARGS)
    [received] = smtp_server.handler.messages
    assert received["message"]["Message-ID"] == result["message_id"] == service.message_id("k-1")
    assert (await service.ledger.get("k-1")).status == "sent"
    again = await task(RedeliveredJob(app), **ARGS)
    assert again["already_sent"] is True and len(smtp_server.handler.messages) == 1


async def test_a_live_attempt_keeps_its_lease(make_email_app, start_app, smtp_server, smtp):
    # The mailer call is cut off at the lease, so a live attempt never overlaps a takeover.
    smtp_server.handler.delay = 3
    app = await start_app(make_email_app(_with_lease(smtp(smtp_server, starttls=False), "0.5s"), PLUGINS))
    service, task = app[EMAIL], app[JOBS].runner.tasks["send-email"].fn
    await service.ledger.reserve("k-1", "ann@example.com", "welcome", _noop)
    with pytest.raises(MailerError, match="within the send lease") as e:
        await task(RedeliveredJob(app), **ARGS)
    assert e.value.permanent is False
    assert (await service.ledger.get("k-1")).status == "retry"


async def test_without_a_lease_an_interrupted_send_is_never_repeated(make_email_app, start_app, smtp_server, smtp):
    app = await start_app(make_email_app(_with_lease(smtp(smtp_server, starttls=False), "0s"), PLUGINS))
    service, task = app[EMAIL], app[JOBS].runner.tasks["send-email"].fn
    await service.ledger.reserve("k-1", "ann@example.com", "welcome", _noop)
    assert await service.ledger.claim("k-1", service.lease) is None
    await asyncio.sleep(0.2)
    with pytest.raises(PermanentError, match="not sent again"):
        await task(RedeliveredJob(app), **ARGS)
    assert smtp_server.handler.messages == []


async def test_jobs_must_use_the_same_mailer(make_email_app):
    data = {"services": {"mailer": {"default": {"provider": "outbox"}, "other": {"provider": "outbox", "dir": "o2"}}}, "jobs": {"email": {"mailer": "other"}}}
    with pytest.raises(ConfigError, match="jobs.email.mailer = 'other'.*one set of mail settings"):
        make_email_app(data, PLUGINS)


async def test_per_recipient_cap_and_template_lookup(make_email_app, start_app, ledger_settings):
    from plugboard.plugins.email.service import EmailError

    app = await start_app(make_email_app({**ledger_settings, "email": {**ledger_settings["email"], "per_recipient_limit": 2}}))
    service = app[EMAIL]
    first = await service.send("cap@example.com", "welcome", WELCOME)
    await service.send("cap@example.com", "welcome", WELCOME)
    with pytest.raises(EmailError, match="the cap") as e:
        await service.send("cap@example.com", "welcome", WELCOME)
    assert e.value.code == "TOO_MANY_REQUESTS"
    assert await service.template_of(first.message_id) == "welcome"
    assert await service.template_of(first.message_id.strip("<>")) == "welcome"


def test_the_redis_ledger_needs_redis(make_email_app):
    with pytest.raises(ConfigError, match="email.ledger = 'redis'.*needs Redis"):
        make_email_app({"email": {"ledger": "redis"}})


class BusyLedger:
    """The real ledger, whose finish() finds the store busy a given number of times."""

    def __init__(self, inner, busy: int) -> None:
        self.inner, self.busy = inner, busy

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def finish(self, *args, **kwargs):
        if self.busy:
            self.busy -= 1
            from sqlalchemy.exc import OperationalError

            raise OperationalError("UPDATE email_messages", {}, Exception("database is locked"))
        return await self.inner.finish(*args, **kwargs)


@pytest.mark.parametrize("busy", [2, 10])
async def test_a_busy_ledger_never_fails_a_delivered_message(make_email_app, start_app, smtp_server, busy):
    app = await start_app(make_email_app(
        {"email": {"ledger": "records"}, "services": {"mailer": {"provider": "smtp", "host": smtp_server.host, "port": smtp_server.port, "starttls": False}}},
        PLUGINS,
    ))
    app[EMAIL].ledger = BusyLedger(app[EMAIL].ledger, busy)
    outcome = await app[EMAIL].send("ann@example.com", "welcome", WELCOME)
    job = await wait_job(app, outcome.job_id, timeout=20)
    assert job.status is JobStatus.COMPLETED and job.attempts == 1
    assert len(smtp_server.handler.messages) == 1
    entry = await app[EMAIL].ledger.inner.get(outcome.key)
    # Recorded after two busy answers; still "sending" (never sent again) after ten.
    assert entry.status == ("sent" if busy == 2 else "sending")
