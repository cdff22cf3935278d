"""Direct uploads (prepareUpload, a signed PUT straight to the store, completeUpload) on S3 (moto) and GCS (the emulator).

Neither moto nor gcp-storage-emulator checks the signed Content-Length and
Content-Type of a pre-signed PUT (real S3 and GCS do), so these clients break
them on purpose: completeUpload must find the violation by itself (HEAD for the
size, a ranged GET for the type, Pillow for an image), delete the object and
refuse, leaving no record.
"""

from __future__ import annotations

import aiohttp
import attrs
import pytest
import sqlalchemy as sa

from plugboard import keys
from plugboard.plugins.uploads.keys import UPLOADS
from uploads_kit import GCS_BUCKET, auth_plugin, elf, pdf, png, settings

S3_BUCKET = "plugboard-direct"
PREPARE = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id method url headers fields expiresAt } }"
COMPLETE = "mutation($id: ID!) { completeUpload(id: $id) { id filename size mimetype url } }"
ALICE = {"Authorization": "Bearer alice"}


class Store:
    """One store under test: settings for the app, and a way to list what it holds."""

    def __init__(self, name: str, service: dict, keys) -> None:
        self.name = name
        self.service = service
        self.keys = keys

    def settings(self, **uploads) -> dict:
        return settings({"provider": self.service["provider"], **uploads}, services={"storage": {"default": self.service}})


@pytest.fixture(params=["s3", "gcs"])
async def store(request, tmp_path):
    if request.param == "s3":
        s3_server = request.getfixturevalue("s3_server")
        from aiobotocore.session import get_session

        async with get_session().create_client("s3", **s3_server.client_kwargs()) as s3:
            await s3.create_bucket(Bucket=S3_BUCKET)

            async def s3_keys() -> list[str]:
                return [o["Key"] for o in (await s3.list_objects_v2(Bucket=S3_BUCKET)).get("Contents", [])]

            service = {
                "provider": "s3", "bucket": S3_BUCKET, "region": s3_server.region, "endpoint_url": s3_server.endpoint_url,
                "access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key,
            }
            yield Store("s3", service, s3_keys)
        return
    from plugboard.plugins.uploads.providers.gcs import GCSOptions, GCSStorage

    emulator = request.getfixturevalue("gcs_emulator")
    key_file = _service_account(tmp_path)
    prefix = f"direct-{request.node.name[:40]}/".replace("[", "-").replace("]", "")
    lister = GCSStorage(GCSOptions(bucket=GCS_BUCKET, endpoint_url=emulator, prefix=prefix))
    await lister.start()

    async def gcs_keys() -> list[str]:
        return [f.key async for f in lister.list()]

    try:
        yield Store("gcs", {"provider": "gcs", "bucket": GCS_BUCKET, "endpoint_url": emulator, "credentials_file": str(key_file), "prefix": prefix}, gcs_keys)
    finally:
        async for f in lister.list():
            await lister.delete(f.key)
        await lister.close()


def _service_account(tmp_path):
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem,
        "client_email": "uploads@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


async def records(client) -> list:
    app = client.server.app
    table = app[keys.METADATA].tables["uploads_files"]
    async with app[keys.RECORDS].connect() as conn:
        return (await conn.execute(sa.select(table))).all()


async def prepare(client, name: str, mimetype: str, size: int) -> dict:
    return (await client.gql_data(PREPARE, {"n": name, "t": mimetype, "s": size}, headers=ALICE))["prepareUpload"]


async def put(prepared: dict, body: bytes, **headers: str) -> None:
    """PUT to the signed URL; extra headers replace the signed ones (as a misbehaving client's would)."""
    sent = {**prepared["headers"], **headers}
    sent.pop("Content-Length", None)  # aiohttp sends the body's real length
    async with aiohttp.ClientSession() as http:
        async with http.request(prepared["method"], prepared["url"], data=body, headers=sent) as resp:
            assert resp.status in (200, 201), await resp.text()


async def test_direct_upload(plugboard_client, store):
    client = await plugboard_client(store.settings(), plugins=[auth_plugin()])
    prepared = await prepare(client, "photo.png", "image/png", len(png()))
    assert prepared["method"] == "PUT"
    assert ("X-Amz-Signature=" if store.name == "s3" else "X-Goog-Signature=") in prepared["url"]
    assert prepared["headers"] == {"Content-Type": "image/png", "Content-Length": str(len(png()))}
    # Nothing is visible before completeUpload.
    assert (await client.gql("query($id: ID!) { file(id: $id) { id } }", {"id": prepared["id"]}, headers=ALICE))["data"]["file"] is None
    await put(prepared, png())
    done = (await client.gql_data(COMPLETE, {"id": prepared["id"]}, headers=ALICE))["completeUpload"]
    assert done["size"] == len(png()) and done["mimetype"] == "image/png" and done["filename"] == "photo.png"
    async with aiohttp.ClientSession() as http:
        async with http.get(done["url"]) as resp:
            assert resp.status == 200 and await resp.read() == png()
    # Completing twice: the upload is no longer waiting.
    again = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert again["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "name, mimetype, body, prepared_size, code",
    [
        # 1MB more than prepared (the signed Content-Length ignored).
        ("big.pdf", "application/pdf", pdf() + b" " * (1024 * 1024), len(pdf()), "FILE_SIZE_MISMATCH"),
        # Fewer bytes than prepared.
        ("short.png", "image/png", png()[:-10], len(png()), "FILE_SIZE_MISMATCH"),
        # An executable of exactly the prepared size, sent as the prepared image/png.
        ("cat.png", "image/png", elf()[: len(png())].ljust(len(png()), b"\0"), len(png()), "FILE_TYPE_MISMATCH"),
        # A PDF where an image was prepared (both allowed types; the content decides).
        ("doc.png", "image/png", pdf().ljust(len(png()), b" ")[: len(png())], len(png()), "FILE_TYPE_MISMATCH"),
        # A PNG header over garbage: sniffs as PNG, does not decode.
        ("broken.png", "image/png", png()[:40] + b"\x00" * (len(png()) - 40), len(png()), "CORRUPT_IMAGE"),
    ],
)
async def test_complete_refuses_and_deletes_what_violates(plugboard_client, store, name, mimetype, body, prepared_size, code):
    client = await plugboard_client(store.settings(), plugins=[auth_plugin()])
    storage = client.server.app[keys.SERVICES].get("storage", "default")
    downloads = []
    full_download = storage.open

    def counting_open(key):
        downloads.append(key)
        return full_download(key)

    storage.open = counting_open
    prepared = await prepare(client, name, mimetype, prepared_size)
    await put(prepared, body)
    assert len(await store.keys()) == 1  # the store took it: nothing but completeUpload stands in the way
    result = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert result["errors"][0]["extensions"]["code"] == code, result
    # Size and type are refused from a HEAD and a ranged GET: only an image to decode is downloaded.
    assert len(downloads) == (1 if code == "CORRUPT_IMAGE" else 0)
    assert await store.keys() == []
    assert await records(client) == []


async def test_a_limit_lowered_after_prepare_is_enforced_on_complete(plugboard_client, store):
    # Prepared under a 10MB limit; the deployment now allows 1KB (e.g. another instance with new settings).
    client = await plugboard_client(store.settings(), plugins=[auth_plugin()])
    body = pdf().ljust(4000, b" ")
    prepared = await prepare(client, "doc.pdf", "application/pdf", len(body))
    await put(prepared, body)
    service = client.server.app[UPLOADS]
    service.config = attrs.evolve(service.config, max_file_size=1024)
    result = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert result["errors"][0]["extensions"]["code"] == "FILE_TOO_LARGE"
    assert await store.keys() == [] and await records(client) == []


async def test_complete_before_the_upload_says_so_and_keeps_the_reservation(plugboard_client, store):
    client = await plugboard_client(store.settings(), plugins=[auth_plugin()])
    prepared = await prepare(client, "photo.png", "image/png", len(png()))
    result = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert result["errors"][0]["extensions"]["code"] == "UPLOAD_INCOMPLETE"
    await put(prepared, png())
    assert (await client.gql_data(COMPLETE, {"id": prepared["id"]}, headers=ALICE))["completeUpload"]["size"] == len(png())


async def test_prepare_refuses_what_the_settings_refuse(plugboard_client, store):
    client = await plugboard_client(store.settings(max_file_size="1KB", allowed_types=["image/*"]), plugins=[auth_plugin()])
    too_big = await client.gql(PREPARE, {"n": "a.png", "t": "image/png", "s": 2048}, headers=ALICE)
    assert too_big["errors"][0]["extensions"]["code"] == "FILE_TOO_LARGE"
    wrong = await client.gql(PREPARE, {"n": "a.pdf", "t": "application/pdf", "s": 100}, headers=ALICE)
    assert wrong["errors"][0]["extensions"]["code"] == "FILE_TYPE_NOT_ALLOWED"
    assert await records(client) == [] and await store.keys() == []
