"""Built-in job types in a `plugboard worker` process (Redis broker), served by a separate server.

The worker stores the export and signs its URL; the server (another process
sharing the data folder) serves the download: both use the signing key
generated once in <data_dir>/secret_key.
"""

from __future__ import annotations

import csv
import io

from builtin_testkit import BOOKS_DATASET
from jobs_testkit import Proc, write_project

from plugboard.app import create_app
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.settings import Settings


async def test_export_made_by_a_worker_downloads_from_the_server(tmp_path, redis_url, aiohttp_client):
    project = write_project(
        tmp_path / "proj",
        {
            "plugins": ["jobs", "books"],
            "books": {"allow_anonymous_mutations": True},
            "redis": {"url": redis_url},
            "jobs": {"broker": "redis", "export": {"datasets": {"books": BOOKS_DATASET}}},
        },
    )
    app = create_app(Settings.load(project))
    client = await aiohttp_client(app)
    resp = await client.post(
        "/graphql",
        json={"query": 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert", publishedYear: 1965}) { id } }'},
    )
    assert not (await resp.json()).get("errors")
    with Proc.worker(project) as worker:
        worker.wait_ready()
        job = await app[JOBS].enqueue("export-data", {"dataset": "books"})
        done = await app[JOBS].wait(job.id, timeout=30)
        assert done.status == JobStatus.COMPLETED, (done.error, worker.output())
        worker.stop()
    resp = await client.get(done.result["url"])
    assert resp.status == 200
    rows = list(csv.reader(io.StringIO((await resp.read()).decode())))
    assert rows == [["id", "title", "publishedYear", "author.name"], ["1", "Dune", "1965", "Frank Herbert"]]
    assert (project / "var" / "secret_key").is_file()
