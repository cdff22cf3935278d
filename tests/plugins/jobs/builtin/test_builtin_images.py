"""process-image: resizing, formats, EXIF orientation, metadata stripping, the pixel limit."""

from __future__ import annotations

import io

import pytest
from builtin_testkit import FakeJob
from PIL import Image

from plugboard.plugins.jobs.builtin.images import supported_formats
from plugboard.providers.storage import LocalStorage
from plugboard.tasks import PermanentError


def _jpeg_with_exif(width=400, height=200, orientation=6) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    # Mark the top-left corner so the rotation can be checked.
    for x in range(20):
        for y in range(20):
            image.putpixel((x, y), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPSInfo
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def _png_rgba(width=300, height=300) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 0, 0))
    buffer = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret person")
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture
async def image_app(make_builtin_app, start_app):
    async def make(jobs=None):
        app, tasks = make_builtin_app(jobs=jobs)
        await start_app(app)
        storage = LocalStorage(app=app)
        await storage.start()
        return app, tasks, storage

    return make


async def test_outputs_in_every_format(image_app):
    app, tasks, storage = await image_app()
    await storage.put("uploads/photo.jpg", _jpeg_with_exif())
    formats = supported_formats()
    assert {"jpeg", "png", "webp"} <= set(formats)
    outputs = [{"width": 100, "height": 100, "fit": "cover", "format": f, "quality": 70} for f in formats]
    job = FakeJob(app)
    result = await tasks["process-image"](job, source="uploads/photo.jpg", outputs=outputs)
    # Orientation 6: the stored 400x200 image is upright 200x400.
    assert (result["width"], result["height"]) == (200, 400)
    assert len(result["outputs"]) == len(formats)
    for out, fmt in zip(result["outputs"], formats):
        assert (out["width"], out["height"], out["format"]) == (100, 100, fmt)
        assert out["key"].startswith(f"images/{job.id}/photo-")
        assert out["url"].startswith("/files/images/")
        data = await storage.read(out["key"])
        assert len(data) == out["size"]
        image = Image.open(io.BytesIO(data))
        assert image.size == (100, 100)
        assert image.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}[fmt]
    # Progress per output, rising to 100.
    assert job.reported[-1] == 100 and job.reported == sorted(job.reported) and len(job.reported) == len(formats) + 1


async def test_exif_orientation_applied_and_metadata_stripped(image_app):
    app, tasks, storage = await image_app()
    await storage.put("p.jpg", _jpeg_with_exif(orientation=6))
    result = await tasks["process-image"](FakeJob(app), source="p.jpg", outputs=[{"width": 200, "format": "jpeg"}])
    data = await storage.read(result["outputs"][0]["key"])
    image = Image.open(io.BytesIO(data))
    assert image.size == (200, 400)  # contain, never enlarged: the upright size
    assert not image.getexif()
    assert "exif" not in image.info and b"CameraMaker" not in data
    # Orientation 6 = rotate 90 clockwise for display: the blue top-left corner ends top-right.
    r, g, b = image.getpixel((image.width - 5, 5))
    assert b > 150 and r < 100


async def test_contain_keeps_ratio_and_png_keeps_alpha(image_app):
    app, tasks, storage = await image_app()
    await storage.put("a.png", _png_rgba(300, 150))
    result = await tasks["process-image"](
        FakeJob(app),
        source="a.png",
        outputs=[{"width": 100, "height": 100, "format": "png"}, {"height": 30, "format": "webp"}, {"width": 60, "format": "jpeg"}],
        prefix="thumbs/a",
    )
    sizes = [(o["width"], o["height"]) for o in result["outputs"]]
    assert sizes == [(100, 50), (60, 30), (60, 30)]
    assert [o["key"].split("/")[0] for o in result["outputs"]] == ["thumbs"] * 3
    png = Image.open(io.BytesIO(await storage.read(result["outputs"][0]["key"])))
    assert png.mode == "RGBA" and png.getpixel((0, 0))[3] == 0
    assert "Author" not in png.info
    jpeg = Image.open(io.BytesIO(await storage.read(result["outputs"][2]["key"])))
    assert jpeg.mode == "RGB"
    assert (await storage.stat(result["outputs"][1]["key"])).content_type == "image/webp"


async def test_pixel_limit_is_permanent(image_app):
    app, tasks, storage = await image_app({"images": {"max_pixels": 10_000}})
    await storage.put("big.png", _png_rgba(200, 100))
    with pytest.raises(PermanentError, match="max_pixels"):
        await tasks["process-image"](FakeJob(app), source="big.png", outputs=[{"width": 10}])


async def test_decompression_bomb_refused_before_decoding(image_app):
    # A 20000x20000 image that compresses to a few KB: refused from its header.
    app, tasks, storage = await image_app()
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 200_000
    await storage.put("bomb.png", buffer.getvalue())
    with pytest.raises(PermanentError, match="max_pixels"):
        await tasks["process-image"](FakeJob(app), source="bomb.png", outputs=[{"width": 10}])


@pytest.mark.parametrize(
    "source, data, outputs, message",
    [
        ("bad.jpg", b"not an image at all", [{"width": 10}], "not a readable image"),
        ("trunc.jpg", None, [{"width": 10}], "not a readable image"),
        ("missing.jpg", ..., [{"width": 10}], "no file"),
        ("../etc/passwd", ..., [{"width": 10}], "storage key"),
        ("ok.png", "png", [], "non-empty list"),
        ("ok.png", "png", [{"width": 10, "fit": "stretch"}], "fit"),
        ("ok.png", "png", [{"width": 10, "fit": "cover"}], "both width and height"),
        ("ok.png", "png", [{"width": 10, "format": "bmp"}], "format must be one of"),
        ("ok.png", "png", [{"width": 0}], "width must be"),
        ("ok.png", "png", [{"width": True}], "width must be"),
        ("ok.png", "png", [{"width": 10, "quality": 101}], "quality"),
        ("ok.png", "png", [{"format": "png"}], "width or a height"),
        ("ok.png", "png", [{"width": 10, "crop": 1}], "unknown keys"),
        ("ok.png", "png", [{"width": 10}] * 11, "at most 10"),
    ],
)
async def test_bad_inputs_are_permanent(image_app, source, data, outputs, message):
    app, tasks, storage = await image_app()
    if data is None:
        data = _jpeg_with_exif()[:300]
    if data == "png":
        data = _png_rgba(20, 20)
    if data is not ...:
        await storage.put(source, data)
    with pytest.raises(PermanentError, match=message):
        await tasks["process-image"](FakeJob(app), source=source, outputs=outputs)


async def test_download_url_serves_the_output(make_builtin_app, aiohttp_client):
    app, tasks = make_builtin_app()
    client = await aiohttp_client(app)
    storage = LocalStorage(app=app)
    await storage.put("p.jpg", _jpeg_with_exif())
    result = await tasks["process-image"](FakeJob(app), source="p.jpg", outputs=[{"width": 50, "height": 50, "fit": "cover", "format": "webp"}])
    resp = await client.get(result["outputs"][0]["url"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(await resp.read())).size == (50, 50)
