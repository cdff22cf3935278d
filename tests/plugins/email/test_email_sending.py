"""Queued sending through the jobs plugin: SMTP with STARTTLS and AUTH (aiosmtpd), at-most-once
delivery with idempotency keys, permanent failures (no retry) and timeouts (retried with backoff)."""

from __future__ import annotations

import time

import pytest

from email_testkit import wait_job

from plugboard.errors import ConfigError
from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
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


async def test_a_send_interrupted_mid_flight_is_not_repeated(make_email_app, start_app, smtp_server, smtp):
    app = await start_app(make_email_app(smtp(smtp_server, starttls=False), PLUGINS))
    service = app[EMAIL]
    outcome = await service.send("ann@example.com", "welcome", WELCOME, key="k-1")
    job = await wait_job(app, outcome.job_id)
    # As if a worker claimed the key, handed the message over and died before recording it.
    await service.ledger.set_status("k-1", "sending")
    task = app[JOBS].runner.tasks["send-email"].fn
    with pytest.raises(PermanentError, match="not sent again"):
        await task(RedeliveredJob(app), **job.args)
    assert len(smtp_server.handler.messages) == 1


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
