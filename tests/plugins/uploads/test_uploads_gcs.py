"""The gcs storage provider against gcp-storage-emulator (GCS's JSON API on loopback, in a subprocess)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from plugboard.plugins.uploads.providers.gcs import GCSOptions, GCSStorage
from uploads_kit import GCS_BUCKET as BUCKET, auth_plugin, png, settings, upload

MB = 1024 * 1024


@pytest.fixture
async def storage(gcs_emulator, service_account, request):
    prefix = f"t-{request.node.name[:40]}/".replace("[", "-").replace("]", "")
    storage = GCSStorage(GCSOptions(bucket=BUCKET, endpoint_url=gcs_emulator, credentials_file=str(service_account[0]), prefix=prefix))
    await storage.start()
    yield storage
    async for f in storage.list():
        await storage.delete(f.key)
    await storage.close()


async def chunks(total: int):
    sent = 0
    while sent < total:
        chunk = bytes([sent // MB % 256]) * min(MB, total - sent)
        sent += len(chunk)
        yield chunk


async def test_put_read_stat_list_delete(storage):
    stored = await storage.put("docs/a.txt", b"hello", content_type="text/plain")
    assert (stored.key, stored.size, stored.content_type) == ("docs/a.txt", 5, "text/plain")
    assert await storage.read("docs/a.txt") == b"hello"
    assert b"".join([c async for c in storage.open("docs/a.txt")]) == b"hello"
    assert [f.key async for f in storage.list("docs/")] == ["docs/a.txt"]
    assert await storage.delete("docs/a.txt") is True
    assert await storage.delete("docs/a.txt") is False
    with pytest.raises(FileNotFoundError):
        await storage.read("docs/a.txt")


async def test_streamed_put(storage):
    stored = await storage.put("big.bin", chunks(7 * MB + 5))
    assert stored.size == 7 * MB + 5
    data = await storage.read("big.bin")
    assert len(data) == 7 * MB + 5 and data[6 * MB] == 6


async def test_v4_signed_url_verifies_with_the_service_account_key(storage, service_account):
    """The signature checks out against the key, by the string-to-sign Google's V4 docs give."""
    import hashlib
    from urllib.parse import quote

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    await storage.put("a.txt", b"signed", content_type="text/plain")
    url = await storage.url("a.txt", expires_in=600)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256" and query["X-Goog-Expires"] == "600"
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items()))
    canonical = "\n".join(["GET", parts.path, canonical_query, "host:storage.googleapis.com\n", "host", "UNSIGNED-PAYLOAD"])
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    service_account[1].verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    # The emulator serves signed URLs (without checking them).
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == b"signed"


def gcs_settings(gcs_emulator, service_account, prefix: str) -> dict:
    service = {"provider": "gcs", "bucket": BUCKET, "endpoint_url": gcs_emulator, "credentials_file": str(service_account[0]), "prefix": prefix}
    return settings({"provider": "gcs"}, services={"storage": {"default": service}})


async def test_file_api_on_gcs(plugboard_client, gcs_emulator, service_account):
    client = await plugboard_client(gcs_settings(gcs_emulator, service_account, "api/"), plugins=[auth_plugin()])
    f = (await upload(client, "photo.png", png(), "image/png"))["data"]["uploadFile"]
    assert f["url"].startswith(gcs_emulator) and "X-Goog-Signature=" in f["url"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f["url"]) as resp:
            assert resp.status == 200 and await resp.read() == png()
    await client.gql_data("mutation($id: ID!) { deleteFile(id: $id) }", {"id": f["id"]}, headers={"Authorization": "Bearer alice"})
    storage = GCSStorage(GCSOptions(bucket=BUCKET, endpoint_url=gcs_emulator, prefix="api/"))
    await storage.start()
    try:
        assert [x.key async for x in storage.list()] == []
    finally:
        await storage.close()


async def test_missing_bucket_gives_a_clear_error(plugboard_client, gcs_emulator, service_account):
    data = gcs_settings(gcs_emulator, service_account, "")
    data["services"]["storage"]["default"]["bucket"] = "no-such-bucket"
    client = await plugboard_client(data, plugins=[auth_plugin()])
    result = await upload(client, "photo.png", png(), "image/png")
    assert result["errors"][0]["extensions"]["code"] == "STORAGE_UNAVAILABLE"
