"""Image variants: through the jobs plugin's process-image task, or synchronously without it."""

from __future__ import annotations

import io

from plugboard.testing import eventually
from uploads_kit import FILE_FIELDS, auth_plugin, pdf, png, upload

OPTIMISE = {"image_optimization": {"enabled": True, "formats": ["webp", "jpg"], "quality": 70, "sizes": [32, 1280]}}
ALICE = {"Authorization": "Bearer alice"}


def rotated_jpeg() -> bytes:
    """A 60x40 JPEG whose EXIF says "rotate 90°" (shown 40x60), with a GPS block to strip."""
    from PIL import Image

    image = Image.new("RGB", (60, 40), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


async def fetch(client, url: str) -> bytes:
    async with client.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_synchronous_variants_without_jobs(uploads_client):
    from PIL import Image

    client = await uploads_client(uploads=OPTIMISE)
    f = (await upload(client, "photo.jpg", rotated_jpeg(), "image/jpeg"))["data"]["uploadFile"]
    assert f["processing"] is False
    variants = {(v["format"], v["width"], v["height"]) for v in f["variants"]}
    # EXIF orientation applied (40 wide, 60 high); 32 wide fits; 1280 never enlarges.
    assert variants == {("webp", 32, 48), ("jpeg", 32, 48), ("webp", 40, 60), ("jpeg", 40, 60)}
    for v in f["variants"]:
        data = await fetch(client, v["url"])
        assert len(data) == v["size"]
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (v["width"], v["height"])
            assert not image.getexif(), "metadata stripped"


async def test_no_variants_for_other_files_or_when_disabled(uploads_client):
    client = await uploads_client(uploads={**OPTIMISE, "allowed_types": ["*/*"]})
    f = (await upload(client, "doc.pdf", pdf(), "application/pdf"))["data"]["uploadFile"]
    assert f["variants"] == [] and f["processing"] is False
    client = await uploads_client()
    f = (await upload(client, "a.png", png(), "image/png"))["data"]["uploadFile"]
    assert f["variants"] == []


async def test_variants_through_the_jobs_plugin(plugboard_client):
    data = {
        "plugins": ["realtime", "jobs", "uploads"],
        "jobs": {"schedules": []},
        "uploads": OPTIMISE,
    }
    client = await plugboard_client(data, plugins=[auth_plugin()])
    f = (await upload(client, "photo.png", png(64, 48), "image/png"))["data"]["uploadFile"]
    assert f["jobId"] is not None
    query = f"query($id: ID!) {{ file(id: $id) {{ {FILE_FIELDS} }} }}"
    async with await client.sse("subscription($id: ID!) { jobUpdated(id: $id) { status progress } }", {"id": f["jobId"]}, headers=ALICE) as stream:
        seen = []
        while not seen or seen[-1]["status"] not in ("COMPLETED", "FAILED"):
            seen.append((await stream.next(timeout=20))["data"]["jobUpdated"])
    assert seen[-1] == {"status": "COMPLETED", "progress": 100}, seen

    async def ready():
        got = (await client.gql_data(query, {"id": f["id"]}, headers=ALICE))["file"]
        return got if not got["processing"] else None

    done = await eventually(ready, timeout=10)
    assert {(v["format"], v["width"], v["height"]) for v in done["variants"]} == {
        ("webp", 32, 24), ("jpeg", 32, 24), ("webp", 64, 48), ("jpeg", 64, 48)
    }
    for v in done["variants"]:
        assert len(await fetch(client, v["url"])) == v["size"]


async def test_public_variants_have_stable_urls_on_local_storage(uploads_client):
    client = await uploads_client(uploads={**OPTIMISE, "default_visibility": "public"})
    f = (await upload(client, "photo.png", png(64, 48), "image/png"))["data"]["uploadFile"]
    assert f["url"] == f"/uploads/public/{f['id']}"
    for v in f["variants"]:
        assert v["url"].startswith(f"/uploads/public/{f['id']}/")
        assert len(await fetch(client, v["url"])) == v["size"]
