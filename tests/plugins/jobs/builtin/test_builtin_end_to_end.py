"""Each built-in job type through app[JOBS].enqueue, the memory broker and a running server."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import os
import time

import pytest
from builtin_testkit import BOOKS_DATASET
from PIL import Image

from plugboard.plugins.jobs.errors import JobArgumentsError, UnknownTaskError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.providers.storage import LocalStorage


def _settings(jobs: dict | None = None, **sections: dict) -> dict:
    return {
        "plugins": ["realtime", "jobs", "books"],
        "jobs": {"schedules": [], "export": {"datasets": {"books": BOOKS_DATASET}}, **(jobs or {})},
        **sections,
    }


@pytest.fixture
async def running(make_builtin_app, aiohttp_client):
    """``await running(jobs_settings)`` -> (app, client): the server runs; jobs run inside it."""

    async def make(jobs: dict | None = None, **sections: dict):
        app, _tasks = make_builtin_app(_settings(jobs, **sections))
        client = await aiohttp_client(app)
        return app, client

    return make


async def _done(app, job, timeout: float = 20.0):
    return await app[JOBS].wait(job.id, timeout=timeout)


async def test_every_type_is_registered(running):
    app, _client = await running()
    assert {"send-email", "process-image", "export-data", "generate-report", "cleanup"} <= set(app[JOBS].types())


async def test_switched_off_types_are_unknown(running):
    app, _client = await running({"jobs": {"email": False, "file_processing": False, "data_export": False, "reports": False, "cleanup": False}})
    assert not {"send-email", "process-image", "export-data", "generate-report", "cleanup"} & set(app[JOBS].types())
    with pytest.raises(UnknownTaskError):
        await app[JOBS].enqueue("send-email", {"to": "a@example.com", "subject": "s", "text": "t"})


async def test_send_email_to_the_outbox(running, tmp_path):
    app, _client = await running()
    job = await app[JOBS].enqueue("send-email", {"to": "ann@example.com", "subject": "Welcome", "text": "Hello", "from": "team@example.com"})
    done = await _done(app, job)
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.result["accepted"] == ["ann@example.com"]
    [path] = (tmp_path / "var" / "outbox").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["From"], message["Subject"]) == ("ann@example.com", "team@example.com", "Welcome")


async def test_send_email_smtp_rejection_fails_without_retrying(running, smtp_server):
    smtp = {"provider": "smtp", "host": smtp_server.host, "port": smtp_server.port, "starttls": False, "timeout": "5s"}
    app, _client = await running(services={"mailer": smtp})
    ok = await app[JOBS].enqueue("send-email", {"to": "ann@example.com", "subject": "s", "text": "t"})
    rejected = await app[JOBS].enqueue("send-email", {"to": "reject@example.com", "subject": "s", "text": "t"})
    assert (await _done(app, ok)).status == JobStatus.COMPLETED
    failed = await _done(app, rejected)
    assert failed.status == JobStatus.FAILED
    assert failed.attempts == 1 and "550" in failed.error and failed.error.startswith("PermanentError")
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann@example.com"]]


async def test_send_email_bad_arguments_fail_at_enqueue(running):
    app, _client = await running()
    with pytest.raises(JobArgumentsError):
        await app[JOBS].enqueue("send-email", {"to": "a@example.com"})  # no subject
    with pytest.raises(JobArgumentsError):
        await app[JOBS].enqueue("send-email", {"to": 42, "subject": "s", "text": "t"})
    # Extra keywords are only those the task declares (``from``), with their types.
    with pytest.raises(JobArgumentsError, match="unknown 'sender'"):
        await app[JOBS].enqueue("send-email", {"to": "a@example.com", "subject": "s", "text": "t", "sender": "x@example.com"})
    with pytest.raises(JobArgumentsError, match="'from' must be str, not int"):
        await app[JOBS].enqueue("send-email", {"to": "a@example.com", "subject": "s", "text": "t", "from": 42})


async def test_process_image(running):
    app, client = await running()
    storage = LocalStorage(app=app)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 20, 30)).save(buffer, "JPEG")
    await storage.put("uploads/cat.jpg", buffer.getvalue())
    job = await app[JOBS].enqueue(
        "process-image",
        {"source": "uploads/cat.jpg", "outputs": [{"width": 64, "height": 64, "fit": "cover", "format": "webp"}, {"width": 320, "format": "png"}]},
    )
    done = await _done(app, job)
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.progress == 100
    assert [(o["width"], o["height"]) for o in done.result["outputs"]] == [(64, 64), (320, 240)]
    resp = await client.get(done.result["outputs"][1]["url"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"


async def test_process_image_unreadable_fails_once(running):
    app, _client = await running()
    await LocalStorage(app=app).put("uploads/bad.jpg", b"garbage")
    job = await app[JOBS].enqueue("process-image", {"source": "uploads/bad.jpg", "outputs": [{"width": 10}]})
    failed = await _done(app, job)
    assert failed.status == JobStatus.FAILED and failed.attempts == 1
    assert "not a readable image" in failed.error


async def _add_books(client, n: int = 3) -> None:
    for i in range(n):
        resp = await client.post(
            "/graphql",
            json={"query": "mutation($i: CreateBookInput!) { createBook(input: $i) { id } }", "variables": {"i": {"title": f"Book {i}", "authorName": "A", "publishedYear": 2000 + i}}},
        )
        assert not (await resp.json()).get("errors")


async def test_export_data(running):
    app, client = await running()
    await _add_books(client)
    job = await app[JOBS].enqueue("export-data", {"dataset": "books", "format": "csv"})
    done = await _done(app, job)
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.result["rows"] == 3 and done.result["format"] == "csv"
    resp = await client.get(done.result["url"])
    rows = list(csv.reader(io.StringIO((await resp.read()).decode())))
    assert rows[0] == ["id", "title", "publishedYear", "author.name"] and len(rows) == 4


async def test_export_unknown_dataset_or_format_fails_at_enqueue(running):
    app, _client = await running()
    with pytest.raises(JobArgumentsError, match="'dataset' must be one of 'books', not 'authors'"):
        await app[JOBS].enqueue("export-data", {"dataset": "authors"})
    with pytest.raises(JobArgumentsError, match="'format' must be one of 'csv', 'json'"):
        await app[JOBS].enqueue("export-data", {"dataset": "books", "format": "xlsx"})
    with pytest.raises(JobArgumentsError, match="'dataset' must be one of 'books'"):
        await app[JOBS].enqueue("generate-report", {"dataset": "nope"})


async def test_generate_report(running):
    app, client = await running()
    await _add_books(client, 2)
    job = await app[JOBS].enqueue("generate-report", {"dataset": "books", "title": "Library"})
    done = await _done(app, job)
    assert done.status == JobStatus.COMPLETED, done.error
    resp = await client.get(done.result["url"])
    page = (await resp.read()).decode()
    assert "<h1>Library</h1>" in page and "Rows: <strong>2</strong>" in page


async def test_cleanup_removes_old_job_records_and_temp_files(running):
    app, _client = await running({"retention": "1s", "cleanup": {"temp_max_age": "1s"}})
    jobs = app[JOBS]
    old = await jobs.enqueue("send-email", {"to": "a@example.com", "subject": "s", "text": "t"})
    assert (await _done(app, old)).status == JobStatus.COMPLETED
    storage = LocalStorage(app=app)
    await storage.put("tmp/scratch.bin", b"x")
    past = time.time() - 60
    os.utime(storage.root / "tmp" / "scratch.bin", (past, past))
    await asyncio.sleep(1.2)
    job = await jobs.enqueue("cleanup", {})
    done = await _done(app, job)
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.result["job_records"] >= 1 and done.result["storage_files"] == 1
    assert await jobs.get(old.id) is None
    assert await jobs.get(job.id) is not None  # itself: not finished while it ran
