"""The ``s3`` storage provider: Amazon S3 and S3-compatible stores through aiobotocore.

``put`` streams: a body up to one part goes in one ``PutObject``; a longer one
in a multipart upload whose parts are sent as they fill, so memory stays
within ``part_size`` whatever the file's size. Any failure (or cancellation)
aborts the multipart upload, so no incomplete upload is left in the bucket.
URLs are pre-signed GETs; :meth:`S3Storage.presigned_put` signs direct uploads.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from plugboard.plugins.uploads.providers.options import S3Options
from plugboard.providers.storage import Data, StorageError, StoredFile, check_key, check_prefix, guess_type

__all__ = ["S3Options", "S3Storage"]


class S3Storage:
    """Files in one bucket (under ``prefix``)."""

    def __init__(self, config: S3Options) -> None:
        self.config = config
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        c = self.config
        kwargs: dict[str, Any] = {"region_name": c.region or "us-east-1"}
        if c.endpoint_url:
            kwargs["endpoint_url"] = c.endpoint_url
        if c.access_key_id and c.secret_access_key:
            kwargs["aws_access_key_id"] = c.access_key_id
            kwargs["aws_secret_access_key"] = c.secret_access_key
        kwargs["config"] = AioConfig(
            s3={"addressing_style": "path" if c.path_style else "auto"},
            signature_version="s3v4",
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        self._stack = contextlib.AsyncExitStack()
        self._client = await self._stack.enter_async_context(get_session().create_client("s3", **kwargs))

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    async def check(self) -> None:
        """For /readyz: the bucket answers with these credentials."""
        try:
            await self.client.head_bucket(Bucket=self.config.bucket)
        except Exception as e:
            raise StorageError(f"S3 bucket {self.config.bucket!r}: {e}") from e

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("the s3 storage is not started")
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return self.config.prefix + key

    def _extra(self, content_type: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": content_type}
        if self.config.server_side_encryption:
            extra["ServerSideEncryption"] = self.config.server_side_encryption
            if self.config.kms_key_id:
                extra["SSEKMSKeyId"] = self.config.kms_key_id
        return extra

    # -- writing -------------------------------------------------------------

    async def put(self, key: str, data: Data, *, content_type: str | None = None) -> StoredFile:
        name = self._key(key)
        extra = self._extra(content_type or guess_type(key))
        part_size = self.config.part_size
        if isinstance(data, (bytes, bytearray, memoryview)):
            await self.client.put_object(Bucket=self.config.bucket, Key=name, Body=bytes(data), **extra)
            return await self.stat(key)
        chunks = _chunks(data)
        first = await _fill(chunks, part_size)
        if len(first) < part_size:
            await self.client.put_object(Bucket=self.config.bucket, Key=name, Body=bytes(first), **extra)
            return await self.stat(key)
        created = await self.client.create_multipart_upload(Bucket=self.config.bucket, Key=name, **extra)
        upload_id = created["UploadId"]
        try:
            parts = []
            buffer = first
            number = 1
            while buffer:
                sent = await self.client.upload_part(
                    Bucket=self.config.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
                )
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                number += 1
                buffer = await _fill(chunks, part_size)
            await self.client.complete_multipart_upload(
                Bucket=self.config.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Shielded from cancellation: an abandoned multipart upload keeps
            # its parts (and their cost) in the bucket until aborted.
            with contextlib.suppress(Exception):
                await _shielded(self.client.abort_multipart_upload(Bucket=self.config.bucket, Key=name, UploadId=upload_id))
            raise
        return await self.stat(key)

    # -- reading -------------------------------------------------------------

    async def open(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        response = await self._get(key)
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(64 * 1024):
                yield chunk

    async def read(self, key: str) -> bytes:
        response = await self._get(key)
        async with response["Body"] as body:
            return await body.read()

    async def _get(self, key: str) -> Any:
        try:
            return await self.client.get_object(Bucket=self.config.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

    async def stat(self, key: str) -> StoredFile:
        from botocore.exceptions import ClientError

        try:
            head = await self.client.head_object(Bucket=self.config.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise
        return StoredFile(
            key=key,
            size=head["ContentLength"],
            content_type=head.get("ContentType") or guess_type(key),
            modified=head["LastModified"].timestamp(),
        )

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> bool:
        existed = await self.exists(key)
        await self.client.delete_object(Bucket=self.config.bucket, Key=self._key(key))
        return existed

    async def list(self, prefix: str = "") -> AsyncIterator[StoredFile]:  # type: ignore[override]
        check_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.config.prefix)
        async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix + prefix):
            for item in page.get("Contents", []):
                yield StoredFile(
                    key=item["Key"][strip:],
                    size=item["Size"],
                    content_type=guess_type(item["Key"]),
                    modified=item["LastModified"].timestamp(),
                )

    # -- URLs ----------------------------------------------------------------

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        return await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.config.bucket, "Key": self._key(key)}, ExpiresIn=int(expires_in)
        )

    async def public_url(self, key: str) -> str:
        if self.config.public_base_url:
            from urllib.parse import quote

            return f"{self.config.public_base_url.rstrip('/')}/{quote(self._key(key))}"
        return await self.url(key, expires_in=7 * 24 * 3600)

    async def presigned_put(self, key: str, *, content_type: str, size: int, expires_in: float = 900.0) -> dict[str, Any]:
        """A pre-signed PUT for a direct upload; type and length are signed headers the client must send."""
        params = {"Bucket": self.config.bucket, "Key": self._key(key), "ContentType": content_type, "ContentLength": size}
        params.update({k: v for k, v in self._extra(content_type).items() if k != "ContentType"})
        url = await self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=int(expires_in))
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        if self.config.server_side_encryption:
            headers["x-amz-server-side-encryption"] = self.config.server_side_encryption
        return {"method": "PUT", "url": url, "headers": headers}


async def _chunks(data: Data) -> AsyncIterator[bytes]:
    if hasattr(data, "__aiter__"):
        async for chunk in data:  # type: ignore[union-attr]
            yield chunk
    elif hasattr(data, "read"):
        import asyncio

        while chunk := await asyncio.to_thread(data.read, 1024 * 1024):  # type: ignore[union-attr]
            yield chunk
    else:
        raise TypeError(f"cannot store a {type(data).__name__}: expected bytes, a binary file or an async iterator of bytes")


async def _fill(chunks: AsyncIterator[bytes], size: int) -> bytearray:
    """The next ``size`` bytes (fewer at the end); memory stays within one part plus one chunk."""
    buffer = bytearray()
    while len(buffer) < size:
        try:
            buffer += await chunks.__anext__()
        except StopAsyncIteration:
            break
    return buffer


async def _shielded(coro: Any) -> Any:
    import asyncio

    return await asyncio.shield(coro)
