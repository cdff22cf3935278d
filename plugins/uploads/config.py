"""``uploads:`` settings: the seed's ``FileUploadConfig``, plus the limits it implies.

Where files go is not configured here: ``storage`` names a service of the
core's ``services.storage`` section (``default`` unless told), so the uploads
plugin, the jobs plugin's exports and any other plugin share one selection.
The seed's ``provider`` (``UPLOAD_PROVIDER``) is kept as a check: when set, it
must equal the provider of that service (see README "File uploads").
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Size

_TYPE = re.compile(r"\*/\*|[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*)")
PROVIDERS = ("local", "s3", "gcs", "cloudinary")
IMAGE_FORMATS = ("webp", "avif", "jpg", "jpeg", "png")


def _check_types(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        if not _TYPE.fullmatch(item):
            raise ValueError(f"{item!r} is not a MIME type or a pattern such as 'image/*', 'application/pdf' or '*/*'")


def _check_formats(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        if item not in IMAGE_FORMATS:
            raise ValueError(f"{item!r} is not an image format; expected some of: webp, avif, jpg, png")


def _check_sizes(instance: object, attribute: attrs.Attribute, value: list[int]) -> None:
    for item in value:
        if not 1 <= item <= 8192:
            raise ValueError(f"{item} is not a width between 1 and 8192 pixels")


@attrs.define(frozen=True, kw_only=True)
class ImageOptimization:
    """``uploads.image_optimization``: variants made for every uploaded image."""

    enabled: bool = True
    formats: list[str] = attrs.field(factory=lambda: ["webp", "jpg"], validator=_check_formats)
    quality: int = attrs.field(default=80, validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(100)))
    #: Widths of the variants (each keeps the aspect ratio and is never enlarged).
    sizes: list[int] = attrs.field(factory=lambda: [320, 1280], validator=_check_sizes)
    #: With the jobs plugin off, variants are made during the upload, within this time.
    sync_timeout: Duration = attrs.field(default=30.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class UploadsConfig:
    """The uploads plugin's settings (the seed's ``FileUploadConfig``)."""

    #: The storage service (``services.storage.<name>``) files go to.
    storage: str = "default"
    #: The seed's ``provider`` (``UPLOAD_PROVIDER``): when set, the storage service must use it.
    provider: Literal["local", "s3", "gcs", "cloudinary"] | None = None
    #: Largest file accepted (``10MB``), at most ``graphql.max_file_size``. The multipart
    #: transport stops an upload to this plugin's fields as soon as it passes this
    #: (``plugboard_upload_rules``); completeUpload checks direct uploads against it.
    max_file_size: Size = attrs.field(default=10 * 1024 * 1024, validator=validators.positive)
    #: Files one ``uploadMultipleFiles`` accepts (the transport's ``graphql.max_files`` also applies).
    max_files: int = attrs.field(default=10, validator=validators.positive)
    #: Types accepted, matched against the type sniffed from the content: exact or ``image/*``.
    allowed_types: list[str] = attrs.field(factory=lambda: ["image/*", "application/pdf"], validator=_check_types)
    image_optimization: ImageOptimization = attrs.field(factory=ImageOptimization)
    #: Visibility of new files: private (signed, expiring URLs) or public (stable URLs).
    default_visibility: Literal["private", "public"] = "private"
    #: How long a private file's signed URL works.
    url_expiry: Duration = attrs.field(default=3600.0, validator=validators.positive)
    #: How long a prepared direct upload (``prepareUpload``) may take to complete.
    direct_upload_expiry: Duration = attrs.field(default=900.0, validator=validators.positive)
    #: Images with more pixels are refused before they are decoded (decompression bombs).
    max_pixels: int = attrs.field(default=50_000_000, validator=validators.positive)
    #: Longest file name kept, in characters (longer ones are shortened, keeping the extension).
    max_filename_length: int = attrs.field(default=255, validator=attrs.validators.and_(validators.positive, attrs.validators.le(1024)))
    #: Anonymous uploads (no ``context.identity``) are refused unless true.
    allow_anonymous: bool = False
    #: Page size limits of ``files(first:)``.
    max_page_size: int = attrs.field(default=100, validator=validators.positive)
    default_page_size: int = attrs.field(default=20, validator=validators.positive)
