"""The ``s3`` storage provider: Amazon S3 and S3-compatible stores through aiobotocore.

``put`` streams: a body up to one part goes in one ``PutObject``; a longer one
in a multipart upload whose parts are sent as they fill, so memory stays
within ``concurrency`` parts whatever the file's size. Any failure (or cancellation)
aborts the multipart upload, so no incomplete upload is left in the bucket.
URLs are pre-signed GETs; :meth:`S3Storage.presigned_put` signs direct uploads.
"""

from __future__ import annotations

import asyncio
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
        read = _reader(data, part_size)
        first = await read()
        if len(first) < part_size:
            await self.client.put_object(Bucket=self.config.bucket, Key=name, Body=first, **extra)
            return await self.stat(key)
        created = await self.client.create_multipart_upload(Bucket=self.config.bucket, Key=name, **extra)
        upload_id = created["UploadId"]
        parts: dict[int, str] = {}
        in_flight: set[asyncio.Task[None]] = set()

        async def send(number: int, body: bytes) -> None:
            sent = await self.client.upload_part(
                Bucket=self.config.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body
            )
            parts[number] = sent["ETag"]

        try:
            body, number = first, 1
            while body:
                # Reading the next part overlaps sending the previous ones; at most
                # `concurrency` parts (each part_size bytes) are held at once.
                if len(in_flight) >= self.config.concurrency:
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    in_flight -= done
                    for task in done:
                        task.result()
                in_flight.add(asyncio.ensure_future(send(number, body)))
                body, number = await read(), number + 1
            if in_flight:
                await asyncio.gather(*in_flight)
            await self.client.complete_multipart_upload(
                Bucket=self.config.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": parts[n], "PartNumber": n} for n in sorted(parts)]},
            )
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
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

    async def read_head(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes (a ranged GET): what type sniffing needs, without the rest."""
        response = await self._get(key, Range=f"bytes=0-{n - 1}")
        async with response["Body"] as body:
            return (await body.read())[:n]

    async def _get(self, key: str, **extra: Any) -> Any:
        try:
            return await self.client.get_object(Bucket=self.config.bucket, Key=self._key(key), **extra)
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


def _reader(data: Data, size: int) -> Any:
    """An async ``read()`` giving the next ``size`` bytes (fewer at the end, b"" when done)."""
    if hasattr(data, "read"):
        # A file (the multipart transport's spooled upload): whole parts read in a thread.
        async def read_file() -> bytes:
            return await asyncio.to_thread(data.read, size)  # type: ignore[union-attr]

        return read_file
    if not hasattr(data, "__aiter__"):
        raise TypeError(f"cannot store a {type(data).__name__}: expected bytes, a binary file or an async iterator of bytes")
    chunks = data.__aiter__()  # type: ignore[union-attr]
    pending = bytearray()

    async def read_chunks() -> bytes:
        nonlocal pending
        while len(pending) < size:
            try:
                pending += await chunks.__anext__()
            except StopAsyncIteration:
                break
        out, pending = bytes(pending[:size]), pending[size:]
        return out

    return read_chunks


async def _shielded(coro: Any) -> Any:
    return await asyncio.shield(coro)
