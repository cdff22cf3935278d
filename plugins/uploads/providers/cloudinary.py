"""The ``cloudinary`` storage provider: Cloudinary's signed upload REST API through aiohttp's client.

The ``cloudinary`` SDK is synchronous, so this speaks the API itself:
uploads are signed POSTs to ``/v1_1/<cloud>/<resource_type>/upload`` (SHA-1
of the sorted ``k=v`` parameters joined with ``&``, followed by the API
secret: Cloudinary's "Authentication signatures"), deletions signed POSTs to
``.../destroy``; metadata and listings come from the Admin API (HTTP basic
auth). Images are stored as ``image`` resources (public id without
extension), anything else as ``raw``. Delivery URLs of ``authenticated``
resources carry Cloudinary's URL signature (``s--<8 chars>--``); images are
delivered optimised through transformation URLs (``f_auto,q_auto``, widths).

What Cloudinary cannot do, and what stands in for it:

- **Expiring delivery URLs.** A signed delivery URL never expires (expiring
  ones need token authentication, a paid add-on). Private files are therefore
  handed out through the private download API
  (``/v1_1/<cloud>/<resource_type>/download``, signed like an upload, with
  ``expires_at``: Cloudinary's ``private_download_url``), which refuses the
  URL after it expires; public files get the stable signed delivery URL.
- **A signed size.** No upload parameter limits the size, so a direct upload's
  size cannot be fixed in its signature; its format can (``allowed_formats``,
  which Cloudinary enforces). ``completeUpload`` checks the stored asset's
  ``bytes`` and format through the Admin API and destroys it if they differ
  from what was prepared. A signed upload URL can also not be limited to one
  use: until it expires (``timestamp`` + 1 hour) it may be re-sent, which
  overwrites the same public id and is verified again on completion.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import time
from typing import Any, AsyncIterator
from urllib.parse import quote

from plugboard.plugins.uploads.providers.options import CloudinaryOptions
from plugboard.providers.storage import Data, StorageError, StoredFile, check_key, check_prefix, guess_type

__all__ = ["CloudinaryOptions", "CloudinaryStorage", "api_signature", "url_signature"]


def api_signature(params: dict[str, Any], secret: str) -> str:
    """Cloudinary's upload API signature: SHA-1 hex of ``a=1&b=2`` + secret.

    Every parameter is signed except ``file``, ``cloud_name``,
    ``resource_type``, ``api_key`` and ``signature``; empty values are left out.
    """
    skip = {"file", "cloud_name", "resource_type", "api_key", "signature"}
    text = "&".join(f"{k}={_value(v)}" for k, v in sorted(params.items()) if k not in skip and v not in (None, ""))
    return hashlib.sha1((text + secret).encode()).hexdigest()


def url_signature(to_sign: str, secret: str) -> str:
    """A delivery URL's signature component: ``s--`` + first 8 chars of urlsafe base64(SHA-1) + ``--``."""
    digest = hashlib.sha1((to_sign + secret).encode()).digest()
    return "s--" + base64.urlsafe_b64encode(digest).decode()[:8] + "--"


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


class CloudinaryStorage:
    def __init__(self, config: CloudinaryOptions) -> None:
        self.config = config
        self.cloud_name, self.api_key, self.api_secret = config.credentials()  # type: ignore[misc]
        self._session: Any = None

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> Any:
        if self._session is None:
            raise StorageError("the cloudinary storage is not started")
        return self._session

    # -- names ---------------------------------------------------------------

    def _resource(self, key: str) -> tuple[str, str]:
        """(resource_type, public_id) of a key."""
        check_key(key)
        name = f"{self.config.folder.strip('/')}/{key}" if self.config.folder else key
        if guess_type(key).startswith("image/"):
            return "image", posixpath.splitext(name)[0]
        return "raw", name

    def _admin_headers(self) -> dict[str, str]:
        # Built by hand: aiohttp 3.13 deprecates BasicAuth and its replacement is new.
        token = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _api(self, path: str) -> str:
        return f"{self.config.api_base_url.rstrip('/')}/v1_1/{self.cloud_name}/{path}"

    def _signed_params(self, params: dict[str, Any]) -> dict[str, Any]:
        params = {**params, "timestamp": int(time.time())}
        params["signature"] = api_signature(params, self.api_secret)
        params["api_key"] = self.api_key
        return params

    async def _json(self, response: Any) -> Any:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        if response.status >= 400:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else None
            if response.status == 404:
                raise FileNotFoundError(message or "not found")
            raise StorageError(f"Cloudinary answered {response.status}: {message or await response.text()}")
        return body

    # -- writing -------------------------------------------------------------

    async def put(self, key: str, data: Data, *, content_type: str | None = None) -> StoredFile:
        import aiohttp

        resource_type, public_id = self._resource(key)
        counted = _Counted(data)
        params = self._signed_params({"public_id": public_id, "type": self.config.delivery_type, "overwrite": "true"})
        form = aiohttp.FormData()
        for name, value in params.items():
            form.add_field(name, str(value))
        form.add_field("file", counted.body(), filename=posixpath.basename(key), content_type=content_type or guess_type(key))
        async with self.session.post(self._api(f"{resource_type}/upload"), data=form) as response:
            result = await self._json(response)
        # The upload response says what Cloudinary stored: an asset that is not
        # what was sent (cut short on the way) is destroyed, not kept.
        if counted.size is not None and int(result.get("bytes", -1)) != counted.size:
            await self.delete(key)
            raise StorageError(f"Cloudinary stored {result.get('bytes')} bytes of the {counted.size} sent; the asset was destroyed")
        return StoredFile(key=key, size=int(result["bytes"]), content_type=content_type or guess_type(key), modified=time.time())

    async def delete(self, key: str) -> bool:
        resource_type, public_id = self._resource(key)
        params = self._signed_params({"public_id": public_id, "type": self.config.delivery_type, "invalidate": "true"})
        async with self.session.post(self._api(f"{resource_type}/destroy"), data={k: str(v) for k, v in params.items()}) as response:
            result = await self._json(response)
        return result.get("result") == "ok"

    # -- reading -------------------------------------------------------------

    async def _resource_info(self, key: str) -> dict[str, Any]:
        resource_type, public_id = self._resource(key)
        url = self._api(f"resources/{resource_type}/{self.config.delivery_type}/{quote(public_id, safe='/')}")
        async with self.session.get(url, headers=self._admin_headers()) as response:
            return await self._json(response)

    async def stat(self, key: str) -> StoredFile:
        try:
            info = await self._resource_info(key)
        except FileNotFoundError:
            raise FileNotFoundError(key) from None
        return _stored(key, info)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def open(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        async with self.session.get(self.download_url(key, expires_in=300)) as response:
            if response.status == 404:
                raise FileNotFoundError(key)
            if response.status >= 400:
                raise StorageError(f"Cloudinary's download API answered {response.status}")
            async for chunk in response.content.iter_chunked(64 * 1024):
                yield chunk

    async def read(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.open(key)])

    async def list(self, prefix: str = "") -> AsyncIterator[StoredFile]:  # type: ignore[override]
        check_prefix(prefix)
        folder = f"{self.config.folder.strip('/')}/" if self.config.folder else ""
        for resource_type in ("image", "raw"):
            params: dict[str, str] = {"prefix": folder + prefix, "max_results": "500"}
            while True:
                url = self._api(f"resources/{resource_type}/{self.config.delivery_type}")
                async with self.session.get(url, params=params, headers=self._admin_headers()) as response:
                    page = await self._json(response)
                for item in page.get("resources", []):
                    name = item["public_id"][len(folder) :]
                    if resource_type == "image" and item.get("format"):
                        name = f"{name}.{'jpg' if item['format'] == 'jpeg' else item['format']}"
                    yield _stored(name, item)
                if not page.get("next_cursor"):
                    break
                params = {**params, "next_cursor": page["next_cursor"]}

    # -- URLs ----------------------------------------------------------------

    def delivery_url(self, key: str, transformation: str = "") -> str:
        """The delivery URL, signed for ``authenticated`` resources (Cloudinary signs the part after the type)."""
        resource_type, public_id = self._resource(key)
        ext = posixpath.splitext(key)[1] if resource_type == "image" else ""
        path = f"{transformation}/{public_id}{ext}" if transformation else f"{public_id}{ext}"
        signature = ""
        if self.config.delivery_type == "authenticated":
            signature = url_signature(path, self.api_secret) + "/"
        base = self.config.delivery_base_url.rstrip("/")
        return f"{base}/{self.cloud_name}/{resource_type}/{self.config.delivery_type}/{signature}{quote(path, safe='/,_')}"

    def download_url(self, key: str, *, expires_in: float = 3600.0) -> str:
        """A private download URL (Cloudinary's download API) that stops working after ``expires_in`` seconds."""
        from urllib.parse import urlencode

        resource_type, public_id = self._resource(key)
        params: dict[str, Any] = {"public_id": public_id, "type": self.config.delivery_type, "expires_at": int(time.time() + expires_in)}
        if resource_type == "image":
            params["format"] = _format(key)
        return self._api(f"{resource_type}/download") + "?" + urlencode(self._signed_params(params))

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        # Signed delivery URLs never expire: private files go through the download API instead.
        return self.download_url(key, expires_in=expires_in)

    async def public_url(self, key: str) -> str:
        return self.delivery_url(key)

    def variant_url(self, key: str, *, width: int, format: str = "auto") -> str:
        """An optimised copy made by Cloudinary on delivery: ``f_auto,q_auto,w_<width>,c_limit``."""
        fmt = "f_auto" if format == "auto" else f"f_{'jpg' if format == 'jpeg' else format}"
        return self.delivery_url(key, f"{fmt},q_auto,w_{width},c_limit")

    async def presigned_post(self, key: str, *, content_type: str, size: int, expires_in: float = 900.0) -> dict[str, Any]:
        """Signed upload parameters for a direct (browser) upload; the client adds ``file``.

        The format is signed (``allowed_formats``: Cloudinary refuses any
        other); the size cannot be (see the module notes), so completion checks it.
        """
        resource_type, public_id = self._resource(key)
        params = {"public_id": public_id, "type": self.config.delivery_type}
        if resource_type == "image":
            # Cloudinary tells an image's format from its content; a raw file's is only its name.
            params["allowed_formats"] = _format(key)
        fields = self._signed_params(params)
        return {"method": "POST", "url": self._api(f"{resource_type}/upload"), "headers": {}, "fields": fields}

    async def image_info(self, key: str) -> tuple[int, int]:
        """(width, height) Cloudinary measured when it decoded the stored image (Admin API)."""
        info = await self._resource_info(key)
        if not info.get("width") or not info.get("height"):
            raise StorageError(f"Cloudinary has no dimensions for {key}")
        return int(info["width"]), int(info["height"])


def _format(key: str) -> str:
    """Cloudinary's format name for a key's extension (``jpg``, ``png``, ``pdf``)."""
    ext = posixpath.splitext(key)[1].lstrip(".").lower()
    return {"jpeg": "jpg", "tif": "tiff"}.get(ext, ext)


class _Counted:
    """The upload body, counting the bytes sent (None: a file whose size is not known up front)."""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.size: int | None = None

    def body(self) -> Any:
        data = self.data
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.size = len(data)
            return bytes(data)
        if hasattr(data, "__aiter__"):
            self.size = 0
            return _AsyncReader(self._count(data))  # aiohttp streams an async iterable payload
        if hasattr(data, "seek") and hasattr(data, "tell"):
            position = data.tell()  # type: ignore[union-attr]
            self.size = data.seek(0, 2) - position  # type: ignore[union-attr]
            data.seek(position)  # type: ignore[union-attr]
        return data

    async def _count(self, chunks: Any) -> Any:
        async for chunk in chunks:
            self.size = (self.size or 0) + len(chunk)
            yield chunk


class _AsyncReader:
    """Wraps an async iterator of bytes as the async iterable aiohttp sends chunk by chunk."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __aiter__(self) -> Any:
        return self._chunks.__aiter__()


def _stored(key: str, info: dict[str, Any]) -> StoredFile:
    import datetime as dt

    created = info.get("created_at")
    try:
        modified = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        modified = 0.0
    return StoredFile(key=key, size=int(info.get("bytes", 0)), content_type=guess_type(key), modified=modified)
