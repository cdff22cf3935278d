"""A ``plugboard worker`` killed in the middle of a send (issue 12, item 3): real worker
processes on a real Redis, a real aiosmtpd that holds the first transaction at RCPT.

The first worker claims the message (ledger ``sending``), opens the SMTP
transaction and is SIGKILLed before the server got the message. A second
worker gets the job after the jobs plugin's idle_timeout; while the dead
attempt's lease runs it does not send (the job is retried), after it the
message goes out exactly once, with the key's Message-ID.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from email_testkit import SmtpHandler, wait_job

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.jobs.model import JobStatus
from plugboard.testing import PlugboardProcess, write_project
from plugboard.testing_servers import free_port

WORKER_READY = "plugboard worker: consuming"


class HoldingHandler(SmtpHandler):
    """Holds the first RCPT until released: the sender is mid-transaction, nothing delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()
        self.release = threading.Event()
        self.rcpts = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts += 1
        if self.rcpts == 1:
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def holding_smtp():
    from aiosmtpd.controller import Controller

    handler = HoldingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), server_hostname="localhost")
    controller.start()
    yield controller, handler
    handler.release.set()
    controller.stop()


async def _until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def test_a_worker_killed_mid_send_is_taken_over_after_the_lease(tmp_path, redis_url, holding_smtp, make_email_app, start_app):
    controller, handler = holding_smtp
    settings = {
        "plugins": ["realtime", "jobs", "email"],
        "redis": {"url": redis_url},
        "services": {"mailer": {"provider": "smtp", "host": "127.0.0.1", "port": controller.port, "starttls": False, "timeout": "10s"}},
        # A silent delivery is claimed by another worker after 1 s; the lease runs 3 s.
        "jobs": {"broker": "redis", "store": "redis", "schedules": [], "idle_timeout": "1s", "retries": 8, "backoff": "500ms", "max_backoff": "1s"},
        "email": {"ledger": "redis", "send_lease": "3s", "per_recipient_limit": 0},
        "server": {"admin_token": "t", "secret_key": "s"},
    }
    project = write_project(tmp_path / "proj", settings)
    # This process enqueues (with the redis broker only `plugboard worker` runs jobs).
    app = await start_app(make_email_app({**settings, "server": {**settings["server"], "data_dir": str(project / "var")}}, settings["plugins"]))
    with PlugboardProcess("worker", project, ready_line=WORKER_READY) as first:
        first.wait_ready()
        outcome = await app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"}, key="crash-1")
        await _until(handler.held.is_set, 15)
        assert (await app[EMAIL].ledger.get("crash-1")).status == "sending"
        claimed_at = time.monotonic()
        first.kill()  # SIGKILL between the ledger's `sending` and the mailer's answer
    handler.release.set()
    assert handler.messages == []  # the server never got the message
    with PlugboardProcess("worker", project, ready_line=WORKER_READY) as second:
        second.wait_ready()
        job = await wait_job(app, outcome.job_id, timeout=30)
        assert job.status is JobStatus.COMPLETED, (job.error, second.output())
        assert second.stop() == 0, second.output()
    # Not before the lease ran out (the takeover), and exactly once.
    assert time.monotonic() - claimed_at >= 3
    [received] = handler.messages
    assert received["message"]["Message-ID"] == app[EMAIL].message_id(outcome.key) == job.result["message_id"]
    # The killed attempt, any refused while its lease ran (none if the second worker
    # started after it ended), then the takeover.
    assert job.attempts >= 2
    assert (await app[EMAIL].ledger.get("crash-1")).status == "sent"
