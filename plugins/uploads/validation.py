"""What an uploaded file must prove before it is stored: its type by content, its size, that an image decodes.

The type is sniffed from the first bytes with the ``filetype`` library (magic
numbers, no table of our own); the client's declared ``Content-Type`` is only
compared with it, never trusted. Images are opened with Pillow after their
header says how many pixels they hold, so a decompression bomb is refused
before any pixel is decoded. File names are normalised here, and the storage
key is ours (``uploads/<id>.<ext>``), never derived from the client's name.
"""

from __future__ import annotations

import mimetypes
import posixpath
import unicodedata
import warnings
from typing import IO

from typing import TYPE_CHECKING

import filetype

from plugboard.graphql.errors import GraphQLError

if TYPE_CHECKING:
    from plugboard.graphql.upload import UploadHead, UploadRules
    from plugboard.plugins.uploads.config import UploadsConfig

#: Bytes read to sniff a type (filetype needs 261; archives-based formats a little more).
SNIFF_BYTES = 8192
OCTET_STREAM = "application/octet-stream"

# Spellings clients send for the same type; the sniffed one is the canonical form.
_SAME = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "application/x-pdf": "application/pdf",
    "audio/mp3": "audio/mpeg",
    "image/x-ms-bmp": "image/bmp",
}

# Bidirectional and other invisible format characters (RLO, LRI, ZWJ ...) hide a
# name's real extension ("invoice\u202egpj.exe" shows as "invoiceexe.jpg").
_FORMAT_CATEGORY = "Cf"


class UploadRefused(GraphQLError):
    """A file the plugin refuses; ``code`` says why (``BAD_USER_INPUT`` family)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code)


def normalise_type(value: str | None) -> str:
    """``Image/JPG; charset=x`` -> ``image/jpeg``."""
    if not value:
        return ""
    base = value.split(";", 1)[0].strip().lower()
    return _SAME.get(base, base)


def sniff(head: bytes, declared: str) -> str:
    """The type the content's first bytes show; ``text/plain`` for clean UTF-8 text; else octet-stream."""
    kind = filetype.guess(head)
    if kind is not None:
        return normalise_type(kind.mime)
    if head and b"\x00" not in head:
        try:
            # A multibyte character may be cut at the end of the sample.
            head.decode("utf-8") if len(head) < SNIFF_BYTES else head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return OCTET_STREAM
        declared = normalise_type(declared)
        # Text has no magic number: a text type the client declared (text/csv) stands.
        return declared if declared.startswith("text/") else "text/plain"
    return OCTET_STREAM


def type_allowed(mimetype: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern == "*/*" or pattern == mimetype:
            return True
        if pattern.endswith("/*") and mimetype.startswith(pattern[:-1]):
            return True
    return False


def check_type(head: bytes, declared: str, allowed: list[str]) -> str:
    """The sniffed type, if allowed and consistent with the declared one; else :class:`UploadRefused`."""
    sniffed = sniff(head, declared)
    declared_n = normalise_type(declared)
    if declared_n and declared_n != OCTET_STREAM and declared_n != sniffed:
        raise UploadRefused(
            f"the file's content is {sniffed}, not the declared {declared_n}", "FILE_TYPE_MISMATCH"
        )
    if not type_allowed(sniffed, allowed):
        raise UploadRefused(
            f"files of type {sniffed} are not accepted (allowed: {', '.join(allowed)})", "FILE_TYPE_NOT_ALLOWED"
        )
    return sniffed


def upload_rules(config: "UploadsConfig") -> dict[str, "UploadRules"]:
    """The File API's fields' rules for the multipart transport: the size limit, and the type checked on the first bytes."""
    from plugboard.graphql.upload import UploadRules

    def check(head: "UploadHead") -> None:
        if head.complete and not head.data:
            raise UploadRefused(f"{head.filename or 'the file'} is empty (0 bytes)", "EMPTY_FILE")
        check_type(head.data, head.mimetype, config.allowed_types)

    rules = UploadRules(max_file_size=config.max_file_size, check=check, head_size=SNIFF_BYTES)
    return {"Mutation.uploadFile": rules, "Mutation.uploadMultipleFiles": rules}


def check_image(file: IO[bytes], *, max_pixels: int) -> tuple[int, int]:
    """Prove an image decodes within ``max_pixels``; its (width, height). Blocking: run in a thread."""
    from PIL import Image, UnidentifiedImageError

    file.seek(0)
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; Pillow's process-wide one is left alone.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadRefused(
                        f"the image has {width}x{height} pixels, more than the limit of {max_pixels}", "IMAGE_TOO_LARGE"
                    )
                image.load()
    except UploadRefused:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses beyond twice its own limit before telling the size.
        raise UploadRefused(f"the image has more pixels than the limit of {max_pixels}", "IMAGE_TOO_LARGE") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise UploadRefused(f"the image cannot be decoded: {e}", "CORRUPT_IMAGE") from None
    finally:
        file.seek(0)
    return width, height


def normalise_filename(name: str | None, *, max_length: int, mimetype: str) -> str:
    """A display name: no folders, no control or invisible format characters, NFC, at most ``max_length``.

    Never used as a storage key. An empty result becomes ``file`` plus the
    extension of ``mimetype``.
    """
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/")
    name = posixpath.basename(name)
    name = "".join(
        c for c in name if unicodedata.category(c) not in ("Cc", _FORMAT_CATEGORY) and c not in "\u2028\u2029"
    ).strip()
    name = name.lstrip(".")
    if not name:
        name = "file" + (extension(mimetype) or "")
    if len(name) > max_length:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: max_length - len(ext) - 1] + "." + ext
        else:
            name = name[:max_length]
    return name


def extension(mimetype: str) -> str:
    """``.jpg`` for image/jpeg; '' when unknown."""
    known = {"image/jpeg": ".jpg", "text/plain": ".txt", "image/tiff": ".tif"}
    return known.get(mimetype) or mimetypes.guess_extension(mimetype, strict=False) or ""


def read_head(file: IO[bytes]) -> bytes:
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    return head



__all__ = [
    "UploadRefused",
    "check_image",
    "check_type",
    "normalise_filename",
    "normalise_type",
    "read_head",
    "sniff",
    "type_allowed",
    "upload_rules",
]

