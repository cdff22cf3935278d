"""The cloudinary storage provider against a local fake that verifies signatures, parameters and bodies."""

from __future__ import annotations

import io

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cloudinary_fake import CLOUD, KEY, SECRET, FakeCloudinary
from plugboard.errors import ConfigError
from plugboard.plugins.uploads.providers.cloudinary import CloudinaryOptions, CloudinaryStorage
from plugboard.providers.storage import StorageError
from uploads_kit import auth_plugin, elf, jpeg, pdf, png, settings, upload


@pytest.fixture
async def fake():
    fake = FakeCloudinary()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


def options(fake, secret: str = SECRET, **extra) -> CloudinaryOptions:
    return CloudinaryOptions(url=f"cloudinary://{KEY}:{secret}@{CLOUD}", api_base_url=fake.base, delivery_base_url=fake.base, **extra)


@pytest.fixture
async def storage(fake):
    storage = CloudinaryStorage(options(fake, folder="app"))
    await storage.start()
    yield storage
    await storage.close()


async def test_upload_stat_read_list_delete(storage, fake):
    stored = await storage.put("uploads/a.png", png(), content_type="image/png")
    assert stored.size == len(png())
    sent = fake.requests[-1]
    assert sent["path"] == f"/v1_1/{CLOUD}/image/upload"
    assert sent["params"]["public_id"] == "app/uploads/a" and sent["params"]["type"] == "authenticated"
    assert (await storage.stat("uploads/a.png")).size == len(png())
    assert await storage.read("uploads/a.png") == png()
    await storage.put("uploads/doc.pdf", pdf(), content_type="application/pdf")
    assert fake.requests[-1]["path"] == f"/v1_1/{CLOUD}/raw/upload"
    assert sorted([f.key async for f in storage.list("uploads/")]) == ["uploads/a.png", "uploads/doc.pdf"]
    assert await storage.delete("uploads/a.png") is True
    assert await storage.delete("uploads/a.png") is False
    with pytest.raises(FileNotFoundError):
        await storage.stat("uploads/a.png")


async def test_streamed_body(storage):
    async def chunks():
        data = png(400, 300)
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    stored = await storage.put("uploads/s.png", chunks(), content_type="image/png")
    assert stored.size == len(png(400, 300))


async def test_wrong_secret_is_refused_with_cloudinarys_message(fake):
    storage = CloudinaryStorage(options(fake, secret="wrong-secret"))
    await storage.start()
    try:
        with pytest.raises(StorageError, match="401.*Invalid Signature"):
            await storage.put("uploads/a.png", png(), content_type="image/png")
    finally:
        await storage.close()
    assert fake.resources == {}


async def test_delivery_urls_are_signed_and_optimised(storage, fake):
    await storage.put("uploads/a.png", png(400, 300), content_type="image/png")
    url = await storage.public_url("uploads/a.png")
    assert "/authenticated/s--" in url
    async with aiohttp.ClientSession() as http:
        async with http.get(url.replace("/s--", "/s--X")) as resp:
            assert resp.status == 401
        variant = storage.variant_url("uploads/a.png", width=100)
        assert "f_auto,q_auto,w_100,c_limit" in variant
        async with http.get(variant) as resp:
            assert resp.status == 200
            from PIL import Image

            with Image.open(io.BytesIO(await resp.read())) as image:
                assert image.size == (100, 75)


def test_cloudinary_url_is_checked():
    with pytest.raises(ValueError):
        CloudinaryOptions()


def test_bad_cloudinary_url_names_the_key(plugboard_app):
    with pytest.raises(ConfigError) as e:
        plugboard_app(settings(services={"storage": {"default": {"provider": "cloudinary", "url": "https://nope"}}}))
    assert "services.storage.default.url" in str(e.value) and "cloudinary://" in str(e.value)


def cloudinary_settings(fake, **uploads) -> dict:
    service = {"provider": "cloudinary", "url": f"cloudinary://{KEY}:{SECRET}@{CLOUD}", "api_base_url": fake.base, "delivery_base_url": fake.base}
    return settings({"provider": "cloudinary", **uploads}, services={"storage": {"default": service}})


async def test_file_api_on_cloudinary_with_transformation_variants(plugboard_client, fake):
    optimise = {"image_optimization": {"enabled": True, "formats": ["webp"], "sizes": [100]}}
    client = await plugboard_client(cloudinary_settings(fake, **optimise), plugins=[auth_plugin()])
    f = (await upload(client, "photo.png", png(400, 300), "image/png"))["data"]["uploadFile"]
    assert f["url"].startswith(f"{fake.base}/v1_1/{CLOUD}/image/download?") and "expires_at=" in f["url"]
    assert "/s--" in f["variants"][0]["url"]  # transformations: signed delivery URLs (they cannot expire)
    assert [(v["format"], v["width"], v["height"], v["size"]) for v in f["variants"]] == [("webp", 100, 75, None)]
    async with aiohttp.ClientSession() as http:
        async with http.get(f["url"]) as resp:
            assert await resp.read() == png(400, 300)
        async with http.get(f["variants"][0]["url"]) as resp:
            assert resp.status == 200 and (await resp.read())[8:12] == b"WEBP"
    await client.gql_data("mutation($id: ID!) { deleteFile(id: $id) }", {"id": f["id"]}, headers={"Authorization": "Bearer alice"})
    assert fake.resources == {}


async def test_direct_upload_with_signed_parameters(plugboard_client, fake):
    client = await plugboard_client(cloudinary_settings(fake), plugins=[auth_plugin()])
    query = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id method url fields } }"
    prepared = (await client.gql_data(query, {"n": "d.png", "t": "image/png", "s": len(png())}, headers={"Authorization": "Bearer alice"}))["prepareUpload"]
    assert prepared["method"] == "POST" and "signature" in prepared["fields"]
    form = aiohttp.FormData()
    for name, value in prepared["fields"].items():
        form.add_field(name, str(value))
    form.add_field("file", png(), filename="d.png", content_type="image/png")
    async with aiohttp.ClientSession() as http:
        async with http.post(prepared["url"], data=form) as resp:
            assert resp.status == 200, await resp.text()
    done = await client.gql_data("mutation($id: ID!) { completeUpload(id: $id) { size mimetype } }", {"id": prepared["id"]}, headers={"Authorization": "Bearer alice"})
    assert done["completeUpload"] == {"size": len(png()), "mimetype": "image/png"}


async def test_private_urls_expire_through_the_download_api(storage, fake):
    await storage.put("uploads/a.png", png(), content_type="image/png")
    await storage.put("uploads/doc.pdf", pdf(), content_type="application/pdf")
    url = await storage.url("uploads/a.png", expires_in=60)
    assert url.startswith(f"{fake.base}/v1_1/{CLOUD}/image/download?") and "expires_at=" in url and "signature=" in url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == png()
        async with http.get(await storage.url("uploads/doc.pdf")) as resp:
            assert resp.status == 200 and await resp.read() == pdf()
        # A forged signature, and a later expiry written over the signed one.
        from urllib.parse import parse_qsl, urlencode, urlsplit

        base, query = url.split("?")
        params = dict(parse_qsl(query))
        for forged in ({**params, "signature": "0" * 40}, {**params, "expires_at": str(int(params["expires_at"]) + 3600)}):
            async with http.get(base + "?" + urlencode(forged)) as resp:
                assert resp.status == 401 and "Invalid Signature" in (await resp.json())["error"]["message"]
        async with http.get(await storage.url("uploads/a.png", expires_in=-5)) as resp:
            assert resp.status == 401 and "expired" in (await resp.json())["error"]["message"]


PREPARE = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id method url fields } }"
COMPLETE = "mutation($id: ID!) { completeUpload(id: $id) { size mimetype url } }"
ALICE = {"Authorization": "Bearer alice"}


async def post_direct(prepared: dict, body: bytes, filename: str, content_type: str) -> tuple[int, dict]:
    form = aiohttp.FormData()
    for name, value in prepared["fields"].items():
        form.add_field(name, str(value))
    form.add_field("file", body, filename=filename, content_type=content_type)
    async with aiohttp.ClientSession() as http:
        async with http.post(prepared["url"], data=form) as resp:
            return resp.status, await resp.json()


async def test_private_file_api_url_expires_and_public_url_is_stable(plugboard_client, fake):
    client = await plugboard_client(cloudinary_settings(fake), plugins=[auth_plugin()])
    f = (await upload(client, "photo.png", png(), "image/png"))["data"]["uploadFile"]
    assert f["visibility"] == "PRIVATE" and "/download?" in f["url"] and "expires_at=" in f["url"]
    public = await client.gql_data(
        "mutation($id: ID!) { setFileVisibility(id: $id, visibility: PUBLIC) { url } }", {"id": f["id"]}, headers=ALICE
    )
    assert "/image/authenticated/s--" in public["setFileVisibility"]["url"] and "expires" not in public["setFileVisibility"]["url"]
    async with aiohttp.ClientSession() as http:
        async with http.get(public["setFileVisibility"]["url"]) as resp:
            assert resp.status == 200 and await resp.read() == png()


async def test_direct_upload_format_is_signed_and_enforced_by_cloudinary(plugboard_client, fake):
    client = await plugboard_client(cloudinary_settings(fake), plugins=[auth_plugin()])
    prepared = (await client.gql_data(PREPARE, {"n": "d.png", "t": "image/png", "s": len(png())}, headers=ALICE))["prepareUpload"]
    assert prepared["fields"]["allowed_formats"] == "png"
    # A JPEG where a PNG was prepared: Cloudinary refuses it.
    status, body = await post_direct(prepared, jpeg(), "d.png", "image/png")
    assert status == 400 and body["error"]["message"] == "Image file format jpg not allowed"
    # Dropping allowed_formats breaks the signature.
    fields = {k: v for k, v in prepared["fields"].items() if k != "allowed_formats"}
    status, body = await post_direct({**prepared, "fields": fields}, jpeg(), "d.png", "image/png")
    assert status == 401 and "Invalid Signature" in body["error"]["message"]
    assert fake.resources == {}


@pytest.mark.parametrize(
    "name, mimetype, prepared_size, body, code, uploads",
    [
        # Cloudinary cannot sign a size: a bigger PNG is stored, completion destroys it.
        ("d.png", "image/png", len(png()), png(640, 480), "FILE_SIZE_MISMATCH", {}),
        # A raw file: an executable of the prepared size sent for a PDF.
        ("d.pdf", "application/pdf", 300, elf()[:300].ljust(300, b"\0"), "FILE_TYPE_MISMATCH", {}),
        # The image's pixels, as Cloudinary measured them, over the limit.
        ("d.png", "image/png", len(png()), png(), "IMAGE_TOO_LARGE", {"max_pixels": 1000}),
    ],
)
async def test_complete_destroys_an_asset_that_violates(plugboard_client, fake, name, mimetype, prepared_size, body, code, uploads):
    client = await plugboard_client(cloudinary_settings(fake, **uploads), plugins=[auth_plugin()])
    prepared = (await client.gql_data(PREPARE, {"n": name, "t": mimetype, "s": prepared_size}, headers=ALICE))["prepareUpload"]
    status, stored = await post_direct(prepared, body, name, mimetype)
    assert status == 200, stored
    assert len(fake.resources) == 1
    result = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert result["errors"][0]["extensions"]["code"] == code, result
    assert fake.resources == {}
    assert fake.requests[-1]["path"].endswith("/destroy")
