"""The ``gcs`` storage provider: Google Cloud Storage through gcloud-aio-storage (aiohttp-based).

Chosen over aiobotocore on GCS's S3-compatible XML API because it speaks
GCS's JSON API, which the gcp-storage-emulator serves (the emulator has no
XML API for writes), so the provider is tested against a real HTTP server.
Signed URLs are V4 (``GOOG4-RSA-SHA256``), made by gcloud-aio's signer with
the service account's key; with ``endpoint_url`` (an emulator) they point at
the emulator, which serves but does not verify them.

``put`` first spools a streamed body to a temporary file on disk (memory
stays flat), then uploads that file (resumable above 5 MB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from typing import Any, AsyncIterator
from urllib.parse import quote

from plugboard.plugins.uploads.providers.options import GCSOptions
from plugboard.providers.storage import Data, StorageError, StoredFile, check_key, check_prefix, guess_type

__all__ = ["GCSOptions", "GCSStorage"]

_GOOGLE = "https://storage.googleapis.com"


class GCSStorage:
    def __init__(self, config: GCSOptions) -> None:
        self.config = config
        self._session: Any = None
        self._storage: Any = None

    async def start(self) -> None:
        import aiohttp
        from gcloud.aio.storage import Storage

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        self._storage = Storage(
            service_file=self.config.credentials_file,
            session=self._session,
            api_root=self.config.endpoint_url,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._storage = None

    @property
    def client(self) -> Any:
        if self._storage is None:
            raise StorageError("the gcs storage is not started")
        return self._storage

    def _name(self, key: str) -> str:
        check_key(key)
        return self.config.prefix + key

    async def check(self) -> None:
        try:
            await self.client.list_objects(self.config.bucket, params={"maxResults": "1"})
        except Exception as e:
            raise StorageError(f"GCS bucket {self.config.bucket!r}: {e}") from e

    async def put(self, key: str, data: Data, *, content_type: str | None = None) -> StoredFile:
        name = self._name(key)
        content_type = content_type or guess_type(key)
        if isinstance(data, (bytes, bytearray, memoryview)):
            await self.client.upload(self.config.bucket, name, bytes(data), content_type=content_type, timeout=int(self.config.timeout))
            return await self.stat(key)
        with tempfile.TemporaryFile() as spool:
            if hasattr(data, "__aiter__"):
                async for chunk in data:  # type: ignore[union-attr]
                    await asyncio.to_thread(spool.write, chunk)
            elif hasattr(data, "read"):
                import shutil

                await asyncio.to_thread(shutil.copyfileobj, data, spool)
            else:
                raise TypeError(f"cannot store a {type(data).__name__}: expected bytes, a binary file or an async iterator of bytes")
            spool.seek(0)
            await self.client.upload(self.config.bucket, name, spool, content_type=content_type, timeout=int(self.config.timeout))
        return await self.stat(key)

    async def open(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        response = await self._call(self.client.download_stream, key)
        while chunk := await response.read(64 * 1024):
            yield chunk

    async def read(self, key: str) -> bytes:
        return await self._call(self.client.download, key)

    async def read_head(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes (a ranged GET): what type sniffing needs, without the rest."""
        data = await self._call(self.client.download, key, headers={"Range": f"bytes=0-{n - 1}"})
        return data[:n]

    async def _call(self, method: Any, key: str, **kwargs: Any) -> Any:
        import aiohttp

        try:
            return await method(self.config.bucket, self._name(key), **kwargs)
        except aiohttp.ClientResponseError as e:
            if e.status == 404:
                raise FileNotFoundError(key) from None
            raise

    async def stat(self, key: str) -> StoredFile:
        meta = await self._call(self.client.download_metadata, key)
        return _stored(key, meta)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> bool:
        try:
            await self._call(self.client.delete, key)
        except FileNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[StoredFile]:  # type: ignore[override]
        check_prefix(prefix)
        params = {"prefix": self.config.prefix + prefix}
        strip = len(self.config.prefix)
        while True:
            page = await self.client.list_objects(self.config.bucket, params=params)
            for item in page.get("items", []):
                yield _stored(item["name"][strip:], item)
            token = page.get("nextPageToken")
            if not token:
                return
            params = {**params, "pageToken": token}

    # -- URLs ----------------------------------------------------------------

    async def _signed(self, key: str, *, expires_in: float, method: str = "GET", headers: dict[str, str] | None = None) -> str:
        from gcloud.aio.storage import Bucket

        name = self._name(key)
        token = self.client.token
        if not token.service_data.get("private_key"):
            if self.config.endpoint_url:
                # An emulator without credentials: it checks no signature.
                return f"{self.config.endpoint_url.rstrip('/')}/{self.config.bucket}/{quote(name, safe='/~')}"
            raise StorageError("signed GCS URLs need a service account key: set credentials_file (or GOOGLE_APPLICATION_CREDENTIALS)")
        blob = Bucket(self.client, self.config.bucket).new_blob(name)
        url = await blob.get_signed_url(int(min(expires_in, 604800)), headers=dict(headers or {}), http_method=method, token=token)
        if self.config.endpoint_url:
            url = self.config.endpoint_url.rstrip("/") + url[len(_GOOGLE):]
        return url

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        return await self._signed(key, expires_in=expires_in)

    async def public_url(self, key: str) -> str:
        if self.config.public_base_url:
            return f"{self.config.public_base_url.rstrip('/')}/{quote(self._name(key), safe='/~')}"
        return await self._signed(key, expires_in=7 * 24 * 3600)

    async def presigned_put(self, key: str, *, content_type: str, size: int, expires_in: float = 900.0) -> dict[str, Any]:
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        url = await self._signed(key, expires_in=expires_in, method="PUT", headers=headers)
        return {"method": "PUT", "url": url, "headers": headers}


def _stored(key: str, meta: dict[str, Any]) -> StoredFile:
    updated = meta.get("updated") or meta.get("timeCreated")
    try:
        modified = dt.datetime.fromisoformat(str(updated).replace("Z", "+00:00")).timestamp()
    except ValueError:
        modified = 0.0
    return StoredFile(key=key, size=int(meta.get("size", 0)), content_type=meta.get("contentType") or guess_type(key), modified=modified)


