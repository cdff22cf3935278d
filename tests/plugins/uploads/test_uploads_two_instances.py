"""Two ``plugboard serve`` processes and a ``plugboard worker`` on one PostgreSQL, one S3 (moto) and one Redis:
a file uploaded through A downloads through B; its variants, made by the worker, show on B's ``jobUpdated``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from plugboard.testing import PlugboardProcess, TransportWS, gql_data, write_project
from uploads_kit import FILE_FIELDS, PREFLIGHT, UPLOAD, form, png

HERE = Path(__file__).resolve().parent
BUCKET = "plugboard-shared"
ALICE = {"Authorization": "Bearer alice"}
SEED_ENV = ("UPLOAD_PROVIDER", "AWS_S3_BUCKET", "AWS_S3_REGION", "CLOUDINARY_URL", "QUEUE_CONCURRENCY", "QUEUE_DASHBOARD")


@pytest.fixture
async def bucket(s3_server):
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_server.client_kwargs()) as client:
        await client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def cluster(tmp_path, s3_server, bucket, postgres_url, redis_url):
    project = write_project(
        tmp_path / "proj",
        {
            "plugins": ["realtime", "jobs", "uploads", "pb_uploads_auth"],
            "records": {"url": postgres_url},
            "redis": {"url": redis_url},
            "services": {
                "pubsub": {"provider": "redis"},
                "storage": {
                    "default": {
                        "provider": "s3",
                        "bucket": BUCKET,
                        "region": s3_server.region,
                        "endpoint_url": s3_server.endpoint_url,
                        "access_key_id": s3_server.access_key,
                        "secret_access_key": s3_server.secret_key,
                    }
                },
            },
            "jobs": {"broker": "redis", "schedules": []},
            "uploads": {"image_optimization": {"enabled": True, "formats": ["webp"], "sizes": [32]}},
        },
    )
    kwargs = {"drop_env": SEED_ENV, "pythonpath": [HERE]}
    procs = [
        PlugboardProcess.serve(project, **kwargs),
        PlugboardProcess.serve(project, **kwargs),
        PlugboardProcess("worker", project, ready_line="plugboard worker: consuming", **kwargs),
    ]
    try:
        for proc in procs:
            proc.wait_ready(60)
        yield procs
    finally:
        for proc in procs:
            proc.close()
            print(proc.output()[-3000:])


async def test_upload_on_a_download_on_b_variant_by_the_worker_seen_on_b(cluster):
    a, b, _worker = cluster
    async with aiohttp.ClientSession(base_url=a.url) as to_a, aiohttp.ClientSession(base_url=b.url) as to_b:
        body = form(UPLOAD, [("photo.png", png(64, 48), "image/png")])
        async with to_a.post("/graphql", data=body.body(), headers={**PREFLIGHT, **ALICE, **body.headers}) as resp:
            result = await resp.json(content_type=None)
        f = result["data"]["uploadFile"]
        assert f["processing"] is True and f["jobId"]

        async with await TransportWS.connect(to_b, {"authorization": "Bearer alice"}) as ws:
            await ws.subscribe("1", "subscription($id: ID!) { jobUpdated(id: $id) { status progress } }", {"id": f["jobId"]})
            seen = []
            async with asyncio.timeout(30):
                while not seen or seen[-1]["status"] not in ("COMPLETED", "FAILED"):
                    message = await ws.receive(timeout=None)
                    assert message["type"] == "next", message
                    seen.append(message["payload"]["data"]["jobUpdated"])
        assert seen[-1] == {"status": "COMPLETED", "progress": 100}, seen

        query = f"query($id: ID!) {{ file(id: $id) {{ {FILE_FIELDS} }} }}"
        on_b = (await gql_data(to_b, query, {"id": f["id"]}, headers=ALICE))["file"]
        assert on_b["processing"] is False
        assert [(v["format"], v["width"], v["height"]) for v in on_b["variants"]] == [("webp", 32, 24)]
        async with aiohttp.ClientSession() as http:
            async with http.get(on_b["url"]) as resp:
                assert resp.status == 200 and await resp.read() == png(64, 48)
            async with http.get(on_b["variants"][0]["url"]) as resp:
                assert resp.status == 200 and (await resp.read())[8:12] == b"WEBP"
        # Deleted through B: gone for A too.
        await gql_data(to_b, "mutation($id: ID!) { deleteFile(id: $id) }", {"id": f["id"]}, headers=ALICE)
        assert (await gql_data(to_a, query, {"id": f["id"]}, headers=ALICE))["file"] is None
