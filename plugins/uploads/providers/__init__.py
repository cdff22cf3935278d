"""Storage providers the uploads plugin adds to the core's ``storage`` kind (``local`` is the core's)."""

from __future__ import annotations

from plugboard.plugins.uploads.providers.options import CloudinaryOptions, GCSOptions, S3Options
from plugboard.providers.registry import ProviderSpec

SPECS = [
    ProviderSpec(
        kind="storage",
        name="s3",
        factory="plugboard.plugins.uploads.providers.s3:S3Storage",
        config=S3Options,
        requires="aiobotocore",
        description="Amazon S3 and S3-compatible stores (MinIO, R2) through aiobotocore",
    ),
    ProviderSpec(
        kind="storage",
        name="gcs",
        factory="plugboard.plugins.uploads.providers.gcs:GCSStorage",
        config=GCSOptions,
        requires="gcloud-aio-storage",
        description="Google Cloud Storage (JSON API) through gcloud-aio-storage",
    ),
    ProviderSpec(
        kind="storage",
        name="cloudinary",
        factory="plugboard.plugins.uploads.providers.cloudinary:CloudinaryStorage",
        config=CloudinaryOptions,
        description="Cloudinary (signed upload REST API over aiohttp; optimised image delivery)",
    ),
]
