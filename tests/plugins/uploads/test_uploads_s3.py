"""The s3 storage provider against moto in server mode (a real HTTP S3 API on loopback)."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from plugboard import keys
from plugboard.plugins.uploads.providers.s3 import S3Options, S3Storage
from plugboard.providers.storage import InvalidKey
from uploads_kit import auth_plugin, png, settings, upload

BUCKET = "plugboard-uploads"
MB = 1024 * 1024


@pytest.fixture
async def s3(s3_server):
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_server.client_kwargs()) as client:
        await client.create_bucket(Bucket=BUCKET)
        yield client


def options(s3_server, **extra) -> S3Options:
    return S3Options(
        bucket=BUCKET,
        region=s3_server.region,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
        part_size=5 * MB,
        **extra,
    )


@pytest.fixture
async def storage(s3_server, s3):
    storage = S3Storage(options(s3_server, prefix="app/"))
    await storage.start()
    yield storage
    await storage.close()


async def chunks(total: int, *, fail_after: int | None = None):
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("client went away")
        chunk = bytes([sent // MB % 256]) * min(MB, total - sent)
        sent += len(chunk)
        yield chunk


async def test_put_read_stat_list_delete(storage, s3):
    stored = await storage.put("docs/a.txt", b"hello", content_type="text/plain")
    assert (stored.key, stored.size, stored.content_type) == ("docs/a.txt", 5, "text/plain")
    assert await storage.read("docs/a.txt") == b"hello"
    assert b"".join([c async for c in storage.open("docs/a.txt")]) == b"hello"
    assert [f.key async for f in storage.list("docs/")] == ["docs/a.txt"]
    # Keys live under the configured prefix in the bucket.
    listed = await s3.list_objects_v2(Bucket=BUCKET)
    assert [o["Key"] for o in listed["Contents"]] == ["app/docs/a.txt"]
    assert await storage.delete("docs/a.txt") is True
    assert await storage.delete("docs/a.txt") is False
    with pytest.raises(FileNotFoundError):
        await storage.stat("docs/a.txt")
    with pytest.raises(FileNotFoundError):
        await storage.read("docs/a.txt")
    with pytest.raises(InvalidKey):
        await storage.put("../escape", b"x")


async def test_streamed_multipart_upload(storage, s3):
    total = 12 * MB + 123
    stored = await storage.put("big.bin", chunks(total), content_type="application/octet-stream")
    assert stored.size == total
    head = await s3.head_object(Bucket=BUCKET, Key="app/big.bin")
    # A multipart object's ETag ends in -<parts>: three parts of 5MB, 5MB, 2MB.
    assert head["ETag"].strip('"').endswith("-3")
    data = await storage.read("big.bin")
    assert len(data) == total and data[5 * MB] == 5


async def test_a_failed_stream_aborts_the_multipart_upload(storage, s3):
    with pytest.raises(ConnectionResetError):
        await storage.put("broken.bin", chunks(20 * MB, fail_after=11 * MB))
    assert (await s3.list_multipart_uploads(Bucket=BUCKET)).get("Uploads", []) == []
    assert "Contents" not in await s3.list_objects_v2(Bucket=BUCKET)


async def test_presigned_get_and_put(storage):
    await storage.put("a.txt", b"signed", content_type="text/plain")
    url = await storage.url("a.txt", expires_in=60)
    assert "X-Amz-Signature=" in url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == b"signed"
        put = await storage.presigned_put("direct.png", content_type="image/png", size=len(png()))
        async with http.put(put["url"], data=png(), headers=put["headers"]) as resp:
            assert resp.status == 200, await resp.text()
    assert (await storage.stat("direct.png")).size == len(png())


async def test_server_side_encryption(s3_server, s3):
    storage = S3Storage(options(s3_server, server_side_encryption="AES256"))
    await storage.start()
    try:
        await storage.put("secret.txt", b"x" * 10)
        await storage.put("secret-big.bin", chunks(6 * MB))
    finally:
        await storage.close()
    for key in ("secret.txt", "secret-big.bin"):
        head = await s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256"


def s3_settings(s3_server, **extra) -> dict:
    service = {
        "provider": "s3",
        "bucket": BUCKET,
        "region": s3_server.region,
        "endpoint_url": s3_server.endpoint_url,
        "access_key_id": s3_server.access_key,
        "secret_access_key": s3_server.secret_key,
        **extra,
    }
    return settings({"provider": "s3"}, services={"storage": {"default": service}})


async def test_file_api_on_s3(plugboard_client, s3_server, s3):
    client = await plugboard_client(s3_settings(s3_server), plugins=[auth_plugin()])
    f = (await upload(client, "photo.png", png(), "image/png"))["data"]["uploadFile"]
    assert f["url"].startswith(s3_server.endpoint_url) and "X-Amz-Signature=" in f["url"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f["url"]) as resp:
            assert resp.status == 200 and await resp.read() == png()
    head = await s3.head_object(Bucket=BUCKET, Key=f"uploads/{f['id']}.png")
    assert head["ContentType"] == "image/png"
    await client.gql_data("mutation($id: ID!) { deleteFile(id: $id) }", {"id": f["id"]}, headers={"Authorization": "Bearer alice"})
    assert "Contents" not in await s3.list_objects_v2(Bucket=BUCKET)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def records_count(client) -> int:
    import sqlalchemy as sa

    app = client.server.app
    table = app[keys.METADATA].tables["uploads_files"]
    async with app[keys.RECORDS].connect() as conn:
        return len((await conn.execute(sa.select(table.c.id))).all())


async def test_unreachable_backend_gives_a_clear_error_and_records_nothing(plugboard_client, s3_server, tmp_path):
    data = s3_settings(s3_server, endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    client = await plugboard_client(data, plugins=[auth_plugin()])
    result = await upload(client, "photo.png", png(), "image/png")
    assert result["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE"
    assert "could not be stored" in result["errors"][0]["message"]
    assert await records_count(client) == 0


async def test_refusing_backend_gives_a_clear_error_and_records_nothing(plugboard_client, s3_server, s3):
    # The bucket does not exist: S3 refuses every write.
    data = s3_settings(s3_server, bucket="no-such-bucket")
    client = await plugboard_client(data, plugins=[auth_plugin()])
    result = await upload(client, "photo.png", png(), "image/png")
    assert result["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE"
    assert "NoSuchBucket" in result["errors"][0]["message"]
    assert await records_count(client) == 0


PREPARE = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id method url headers } }"
COMPLETE = "mutation($id: ID!) { completeUpload(id: $id) { id size mimetype url } }"
ALICE = {"Authorization": "Bearer alice"}


async def test_direct_upload_to_s3(plugboard_client, s3_server, s3):
    client = await plugboard_client(s3_settings(s3_server), plugins=[auth_plugin()])
    prepared = (await client.gql_data(PREPARE, {"n": "d.png", "t": "image/png", "s": len(png())}, headers=ALICE))["prepareUpload"]
    assert prepared["url"].startswith(s3_server.endpoint_url)
    async with aiohttp.ClientSession() as http:
        async with http.put(prepared["url"], data=png(), headers=prepared["headers"]) as resp:
            assert resp.status == 200, await resp.text()
    done = (await client.gql_data(COMPLETE, {"id": prepared["id"]}, headers=ALICE))["completeUpload"]
    assert done["size"] == len(png()) and done["mimetype"] == "image/png"


@pytest.mark.parametrize(
    "body, code",
    [(png() + b"extra", "FILE_SIZE_MISMATCH"), (b"\x7fELF" + b"\x00" * (len(png()) - 4), "FILE_TYPE_MISMATCH")],
)
async def test_complete_refuses_an_object_unlike_the_prepared_one(plugboard_client, s3_server, s3, body, code):
    client = await plugboard_client(s3_settings(s3_server), plugins=[auth_plugin()])
    prepared = (await client.gql_data(PREPARE, {"n": "d.png", "t": "image/png", "s": len(png())}, headers=ALICE))["prepareUpload"]
    # A client that ignored the signed headers (or a store that does not check them).
    await s3.put_object(Bucket=BUCKET, Key=f"uploads/{prepared['id']}.png", Body=body)
    result = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert result["errors"][0]["extensions"]["code"] == code
    assert "Contents" not in await s3.list_objects_v2(Bucket=BUCKET)
    assert await records_count(client) == 0
