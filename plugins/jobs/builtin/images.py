"""``process-image``: resized, re-encoded copies of an image in file storage.

Arguments: ``source`` (a storage key) and ``outputs``, a list of
``{width, height, fit: cover|contain, format: jpeg|png|webp|avif, quality}``
(``contain``, the default, keeps the aspect ratio within the box and never
enlarges; it may give only one side. ``cover`` fills the box exactly,
cropping the overflow). ``prefix`` picks where outputs go (default
``images/<job id>``). The EXIF orientation is applied, then every metadata
block but the colour profile is dropped (EXIF with GPS positions, XMP, text
chunks). Images with more pixels than ``jobs.images.max_pixels`` are refused
before being decoded. Anything that can never work (a missing source, bad
outputs, an unreadable image) fails at once.

Result: ``{source, width, height, outputs: [{key, url, width, height, format, size}]}``.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import warnings
from typing import Any, Callable

import attrs

from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.plugins.jobs.builtin.services import Services
from plugboard.providers.storage import InvalidKey, check_key
from plugboard.tasks import PermanentError, TaskContext, retry

#: Output format -> (Pillow format, extension, content type, Pillow feature to check or None).
FORMATS = {
    "jpeg": ("JPEG", "jpg", "image/jpeg", None),
    "png": ("PNG", "png", "image/png", None),
    "webp": ("WEBP", "webp", "image/webp", "webp"),
    "avif": ("AVIF", "avif", "image/avif", "avif"),
}
_ALIASES = {"jpg": "jpeg"}


def supported_formats() -> list[str]:
    """The output formats the installed Pillow can write."""
    from PIL import features

    return [name for name, (_p, _e, _t, feature) in FORMATS.items() if feature is None or features.check(feature)]


@attrs.define(frozen=True)
class OutputSpec:
    width: int | None
    height: int | None
    fit: str
    format: str
    quality: int


def parse_outputs(outputs: Any, settings: BuiltinConfig) -> list[OutputSpec]:
    """Check every requested output before any work; ValueError says what is wrong."""
    if not isinstance(outputs, list) or not outputs:
        raise ValueError("outputs must be a non-empty list")
    if len(outputs) > settings.images.max_outputs:
        raise ValueError(f"at most {settings.images.max_outputs} outputs per job")
    formats = supported_formats()
    specs = []
    for i, out in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(out, dict):
            raise ValueError(f"{where} must be an object")
        unknown = set(out) - {"width", "height", "fit", "format", "quality"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        size = {}
        for side in ("width", "height"):
            value = out.get(side)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= settings.images.max_dimension):
                raise ValueError(f"{where}.{side} must be an integer from 1 to {settings.images.max_dimension}")
            size[side] = value
        fit = out.get("fit", "contain")
        if fit not in ("cover", "contain"):
            raise ValueError(f"{where}.fit must be 'cover' or 'contain'")
        if size["width"] is None and size["height"] is None:
            raise ValueError(f"{where} needs a width or a height")
        if fit == "cover" and (size["width"] is None or size["height"] is None):
            raise ValueError(f"{where}: fit 'cover' needs both width and height")
        fmt = out.get("format", "jpeg")
        fmt = _ALIASES.get(fmt, fmt) if isinstance(fmt, str) else fmt
        if fmt not in formats:
            raise ValueError(f"{where}.format must be one of {', '.join(formats)}")
        quality = out.get("quality", 85)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"{where}.quality must be an integer from 1 to 100")
        specs.append(OutputSpec(size["width"], size["height"], fit, fmt, quality))
    return specs


def open_image(data: bytes, max_pixels: int) -> Any:
    """Decode ``data`` (first frame), upright; ValueError when unreadable or too large."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Our own limit applies below; Pillow's global one must not turn
            # into a warning or an error first (it is process-wide state).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"the image is {width}x{height}: more than jobs.images.max_pixels ({max_pixels}) pixels")
            image.load()
    except Image.DecompressionBombError as e:
        raise ValueError(f"too many pixels, more than jobs.images.max_pixels allows ({e})") from None
    except UnidentifiedImageError as e:
        raise ValueError(f"not a readable image: {e}") from None
    except (OSError, SyntaxError, EOFError) as e:
        raise ValueError(f"not a readable image: {type(e).__name__}: {e}") from None
    icc = image.info.get("icc_profile")
    upright = ImageOps.exif_transpose(image)
    if upright is None:  # transposed in place on older Pillow versions
        upright = image
    upright.info = {"icc_profile": icc} if icc else {}
    return upright


def render(image: Any, spec: OutputSpec) -> tuple[bytes, int, int]:
    """One output: resized, converted, encoded without metadata."""
    from PIL import Image, ImageOps

    pil_format = FORMATS[spec.format][0]
    if spec.fit == "cover":
        out = ImageOps.fit(image, (spec.width, spec.height), Image.Resampling.LANCZOS)
    else:
        w, h = image.size
        box_w = spec.width or w * 10
        box_h = spec.height or h * 10
        scale = min(box_w / w, box_h / h, 1.0)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image.copy()
    out = _convert_for(out, pil_format)
    icc = image.info.get("icc_profile")
    out.info = {}
    options: dict[str, Any] = {"quality": spec.quality}
    if icc:
        options["icc_profile"] = icc
    if pil_format == "JPEG":
        options.update(optimize=True, progressive=True)
    elif pil_format == "PNG":
        options = {"optimize": True, **({"icc_profile": icc} if icc else {})}
    buffer = io.BytesIO()
    out.save(buffer, format=pil_format, **options)
    return buffer.getvalue(), out.width, out.height


def _convert_for(image: Any, pil_format: str) -> Any:
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if pil_format == "JPEG":
        if has_alpha:
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    keep = ("RGB", "RGBA", "L", "LA") if pil_format == "PNG" else ("RGB", "RGBA")
    if image.mode in keep:
        return image
    return image.convert("RGBA" if has_alpha else "RGB")


def make_task(settings: BuiltinConfig, services: Services) -> Callable[..., Any]:
    @retry(permanent=(InvalidKey,))
    async def process_image(job: TaskContext, source: str, outputs: list, prefix: str | None = None) -> dict[str, Any]:
        try:
            check_key(source)
            folder = check_key(prefix.strip("/")) if prefix else f"images/{job.id}"
            specs = parse_outputs(outputs, settings)
        except ValueError as e:
            raise PermanentError(f"process-image: {e}") from None
        storage = await services.storage(job.app)
        try:
            data = await storage.read(source)
        except FileNotFoundError:
            raise PermanentError(f"process-image: no file {source!r} in storage") from None
        try:
            image = await asyncio.to_thread(open_image, data, settings.images.max_pixels)
        except ValueError as e:
            raise PermanentError(f"process-image: {source!r}: {e}") from None
        await job.progress(10)
        stem = posixpath.splitext(posixpath.basename(source))[0]
        results = []
        for i, spec in enumerate(specs):
            encoded, width, height = await asyncio.to_thread(render, image, spec)
            _pil, ext, content_type, _feature = FORMATS[spec.format]
            key = f"{folder}/{stem}-{i + 1}-{width}x{height}.{ext}"
            await storage.put(key, encoded, content_type=content_type)
            url = await storage.url(key, expires_in=settings.files.url_expiry)
            results.append({"key": key, "url": url, "width": width, "height": height, "format": spec.format, "size": len(encoded)})
            await job.progress(10 + 90 * (i + 1) / len(specs))
        return {"source": source, "width": image.width, "height": image.height, "outputs": results}

    return process_image
