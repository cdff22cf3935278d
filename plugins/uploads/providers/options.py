"""Options of the uploads plugin's storage providers (importable without their client libraries)."""

from __future__ import annotations

from typing import Literal

import attrs

from plugboard import validators
from plugboard.units import Secret, Size


def _part_size(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 5 * 1024 * 1024 <= value <= 5 * 1024**3:
        raise ValueError("S3 parts are between 5MB and 5GB")


@attrs.define(frozen=True, kw_only=True)
class S3Options:
    """``services.storage.<name>`` with ``provider: s3``.

    Credentials: ``access_key_id``/``secret_access_key`` here, else botocore's
    own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
    instance roles).
    """

    bucket: str = attrs.field(validator=attrs.validators.min_len(3))
    region: str | None = None
    #: An S3-compatible store (MinIO, R2, moto): ``http://127.0.0.1:9000``.
    endpoint_url: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    #: Path-style addressing (``endpoint/bucket/key``), as MinIO needs.
    path_style: bool = False
    #: Keys are stored under this prefix in the bucket (``app/``).
    prefix: str = ""
    #: Server-side encryption: ``AES256`` or ``aws:kms`` (with ``kms_key_id``).
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    #: Multipart part size: memory per upload stays within one part.
    part_size: Size = attrs.field(default=5 * 1024 * 1024, validator=_part_size)
    #: Parts sent at once; memory per upload is about part_size x concurrency.
    concurrency: int = attrs.field(default=2, validator=attrs.validators.and_(validators.positive, attrs.validators.le(16)))
    #: Stable URLs of public files (a CDN or the bucket's website); empty: long-lived pre-signed URLs.
    public_base_url: str = ""
    connect_timeout: float = attrs.field(default=10.0, validator=validators.positive)
    read_timeout: float = attrs.field(default=60.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class GCSOptions:
    """``services.storage.<name>`` with ``provider: gcs``.

    Credentials: a service account key file (``credentials_file``, else
    ``GOOGLE_APPLICATION_CREDENTIALS``); its private key also signs the V4
    download and upload URLs. ``endpoint_url`` points at an emulator
    (``http://127.0.0.1:9023``), where no credentials are needed.
    """

    bucket: str = attrs.field(validator=attrs.validators.min_len(3))
    credentials_file: str | None = None
    endpoint_url: str | None = None
    prefix: str = ""
    public_base_url: str = ""
    timeout: float = attrs.field(default=60.0, validator=validators.positive)


def _cloudinary_url(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and parse_cloudinary_url(value) is None:
        raise ValueError("expected cloudinary://<api_key>:<api_secret>@<cloud_name>")


def parse_cloudinary_url(url: str) -> tuple[str, str, str] | None:
    """``cloudinary://key:secret@cloud`` -> (cloud_name, api_key, api_secret), or None."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme != "cloudinary" or not parts.hostname or not parts.username or not parts.password:
        return None
    return parts.hostname, unquote(parts.username), unquote(parts.password)


@attrs.define(frozen=True, kw_only=True)
class CloudinaryOptions:
    """``services.storage.<name>`` with ``provider: cloudinary``: ``url`` (``CLOUDINARY_URL``) or the three parts."""

    url: Secret | None = attrs.field(default=None, validator=_cloudinary_url)
    cloud_name: str | None = None
    api_key: str | None = None
    api_secret: Secret | None = None
    #: ``authenticated``: delivery URLs are signed (private files); ``upload``: public.
    delivery_type: Literal["authenticated", "upload"] = "authenticated"
    #: Public ids are ``<folder>/<key>``.
    folder: str = ""
    api_base_url: str = "https://api.cloudinary.com"
    delivery_base_url: str = "https://res.cloudinary.com"
    timeout: float = attrs.field(default=60.0, validator=validators.positive)

    def __attrs_post_init__(self) -> None:
        if self.credentials() is None:
            raise ValueError("set url (CLOUDINARY_URL) or cloud_name, api_key and api_secret")

    def credentials(self) -> tuple[str, str, str] | None:
        if self.url:
            return parse_cloudinary_url(self.url)
        if self.cloud_name and self.api_key and self.api_secret:
            return self.cloud_name, self.api_key, self.api_secret
        return None
