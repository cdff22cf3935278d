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
from uploads_kit import auth_plugin, pdf, png, settings, upload


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
    url = await storage.url("uploads/a.png")
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
    assert f["url"].startswith(fake.base) and "/s--" in f["url"]
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
