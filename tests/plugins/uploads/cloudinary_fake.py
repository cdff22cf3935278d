"""A local stand-in for Cloudinary's upload, Admin and delivery APIs that checks what it is sent.

Written from Cloudinary's documentation, independently of the provider:
- Upload API (``POST /v1_1/<cloud>/<resource_type>/upload``, multipart): ``file``,
  ``api_key``, ``timestamp`` (refused when over an hour off), ``signature`` =
  SHA-1 hex of every other parameter, sorted, as ``k=v`` joined with ``&``,
  followed by the API secret ("Authentication signatures"); answers 401
  ``{"error": {"message": "Invalid Signature ..."}}`` otherwise, and the upload
  response fields (public_id, version, bytes, format, resource_type, type, url,
  secure_url, created_at, width/height for images).
  ``allowed_formats`` (comma-separated) refuses an image of any other format
  (400 "Image file format <fmt> not allowed"); formats are Cloudinary's names
  (``jpg``, not ``jpeg``).
- ``POST .../destroy`` (same signature rule): ``{"result": "ok" | "not found"}``.
- Private download API (``GET /v1_1/<cloud>/<resource_type>/download``, the SDKs'
  ``private_download_url``): query ``public_id``, ``format``, ``type``,
  ``expires_at``, ``timestamp``, ``api_key``, ``signature`` (same rule); refused
  once ``expires_at`` has passed; answers the original bytes.
- Admin API (HTTP basic auth ``api_key:api_secret``): one resource, or a listing by prefix.
- Delivery: ``/<cloud>/<resource_type>/<type>/[s--SIG--/][transformation/]<public_id>[.ext]``;
  ``authenticated`` resources need the signature (first 8 chars of URL-safe
  base64 SHA-1 of the rest of the path + secret).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import time

from aiohttp import web

CLOUD, KEY, SECRET = "demo-cloud", "123456789012345", "abcdefghijklmnopqrstuvwxyz0"
EXCLUDED = {"file", "cloud_name", "resource_type", "api_key", "signature"}


def expected_signature(params: dict[str, str]) -> tuple[str, str]:
    to_sign = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in EXCLUDED and v != "")
    return hashlib.sha1((to_sign + SECRET).encode()).hexdigest(), to_sign


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


class FakeCloudinary:
    def __init__(self) -> None:
        self.resources: dict[tuple[str, str, str], dict] = {}
        self.requests: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1_1/{cloud}/{rtype}/upload", self.upload)
        self.app.router.add_post("/v1_1/{cloud}/{rtype}/destroy", self.destroy)
        self.app.router.add_get("/v1_1/{cloud}/resources/{rtype}/{type}", self.listing)
        self.app.router.add_get("/v1_1/{cloud}/resources/{rtype}/{type}/{public_id:.+}", self.resource)
        self.app.router.add_get("/v1_1/{cloud}/{rtype}/download", self.download)
        self.app.router.add_get("/{cloud}/{rtype}/{type}/{rest:.+}", self.deliver)
        self.base = ""

    def check_signed(self, request: web.Request, params: dict[str, str], *, fresh: bool = True) -> web.Response | None:
        if request.match_info["cloud"] != CLOUD:
            return error(404, "Invalid cloud_name " + request.match_info["cloud"])
        if request.match_info["rtype"] not in ("image", "raw", "video", "auto"):
            return error(400, "Invalid resource type")
        if params.get("api_key") != KEY:
            return error(401, f"Unknown API key {params.get('api_key')}")
        timestamp = params.get("timestamp", "")
        if not timestamp.isdigit() or (fresh and abs(int(timestamp) - time.time()) > 3600):
            return error(400, f"Stale request - reported time is {timestamp}")
        good, to_sign = expected_signature(params)
        if params.get("signature") != good:
            return error(401, f"Invalid Signature {params.get('signature')}. String to sign - '{to_sign}'.")
        return None

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return error(400, "Upload requests must be multipart/form-data")
        params: dict[str, str] = {}
        data = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "file":
                data = await part.read()
                file_type = part.headers.get("Content-Type", "")
            else:
                params[part.name] = (await part.read()).decode()
        self.requests.append({"path": request.path, "params": dict(params), "size": None if data is None else len(data)})
        refused = self.check_signed(request, params)
        if refused is not None:
            return refused
        if data is None:
            return error(400, "Missing required parameter - file")
        rtype = request.match_info["rtype"]
        dtype = params.get("type", "upload")
        public_id = params.get("public_id") or hashlib.md5(data).hexdigest()[:20]
        resource = {
            "asset_id": hashlib.md5(public_id.encode()).hexdigest(),
            "public_id": public_id,
            "version": int(time.time()),
            "signature": hashlib.sha1(data).hexdigest(),
            "resource_type": rtype,
            "type": dtype,
            "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bytes": len(data),
            "placeholder": False,
        }
        if rtype == "image":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(io.BytesIO(data)) as image:
                    fmt = {"jpeg": "jpg"}.get(image.format.lower(), image.format.lower())
                    resource.update(width=image.width, height=image.height, format=fmt)
            except UnidentifiedImageError:
                return error(400, "Invalid image file")
            allowed = params.get("allowed_formats")
            if allowed and resource["format"] not in allowed.split(","):
                return error(400, f"Image file format {resource['format']} not allowed")
        if (rtype, dtype, public_id) in self.resources and params.get("overwrite") == "false":
            return web.json_response({**self.resources[(rtype, dtype, public_id)]["info"], "existing": True})
        ext = f".{resource['format']}" if "format" in resource else ""
        resource["url"] = f"{self.base}/{CLOUD}/{rtype}/{dtype}/v{resource['version']}/{public_id}{ext}"
        resource["secure_url"] = resource["url"]
        self.resources[(rtype, dtype, public_id)] = {"info": resource, "data": data, "content_type": file_type}
        return web.json_response(resource)

    async def destroy(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append({"path": request.path, "params": dict(params)})
        refused = self.check_signed(request, params)
        if refused is not None:
            return refused
        key = (request.match_info["rtype"], params.get("type", "upload"), params.get("public_id", ""))
        return web.json_response({"result": "ok" if self.resources.pop(key, None) else "not found"})

    async def download(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.requests.append({"path": request.path, "params": dict(params)})
        # The URL may be used until expires_at, however old its timestamp.
        refused = self.check_signed(request, params, fresh=False)
        if refused is not None:
            return refused
        expires_at = params.get("expires_at", "")
        if not expires_at.isdigit() or int(expires_at) < time.time():
            return error(401, "The download URL has expired")
        rtype = request.match_info["rtype"]
        found = self.resources.get((rtype, params.get("type", "upload"), params.get("public_id", "")))
        if found is None or (rtype == "image" and params.get("format") != found["info"].get("format")):
            return error(404, "Resource not found")
        return web.Response(body=found["data"], headers={"Content-Disposition": "attachment"})

    def check_basic(self, request: web.Request) -> web.Response | None:
        expected = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return error(401, "Invalid credentials")
        return None

    async def resource(self, request: web.Request) -> web.Response:
        refused = self.check_basic(request)
        if refused:
            return refused
        found = self.resources.get((request.match_info["rtype"], request.match_info["type"], request.match_info["public_id"]))
        if found is None:
            return error(404, f"Resource not found - {request.match_info['public_id']}")
        return web.json_response(found["info"])

    async def listing(self, request: web.Request) -> web.Response:
        refused = self.check_basic(request)
        if refused:
            return refused
        rtype, dtype = request.match_info["rtype"], request.match_info["type"]
        prefix = request.query.get("prefix", "")
        items = [r["info"] for (t, d, pid), r in sorted(self.resources.items()) if t == rtype and d == dtype and pid.startswith(prefix)]
        return web.json_response({"resources": items})

    async def deliver(self, request: web.Request) -> web.Response:
        rtype, dtype = request.match_info["rtype"], request.match_info["type"]
        rest = request.match_info["rest"]
        if dtype == "authenticated":
            sig, _, rest = rest.partition("/")
            digest = hashlib.sha1((rest + SECRET).encode()).digest()
            if sig != "s--" + base64.urlsafe_b64encode(digest).decode()[:8] + "--":
                return web.Response(status=401, text="signature mismatch")
        parts = rest.split("/")
        transformation = parts.pop(0) if parts and "_" in parts[0] and "," in parts[0] else ""
        name = "/".join(parts)
        public_id = name.rsplit(".", 1)[0] if rtype == "image" else name
        found = self.resources.get((rtype, dtype, public_id))
        if found is None:
            return web.Response(status=404)
        data = found["data"]
        if transformation:
            data = self.transform(data, transformation)
        return web.Response(body=data, headers={"X-Transformation": transformation})

    @staticmethod
    def transform(data: bytes, transformation: str) -> bytes:
        from PIL import Image

        options = dict(item.split("_", 1) for item in transformation.split(","))
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            width = int(options.get("w", image.width))
            if width < image.width:
                image = image.resize((width, round(image.height * width / image.width)))
            fmt = {"auto": "WEBP", "webp": "WEBP", "jpg": "JPEG", "png": "PNG"}[options.get("f", "auto")]
            out = io.BytesIO()
            image.save(out, fmt)
            return out.getvalue()
