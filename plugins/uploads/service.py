"""The upload service: validate, store, record, and hand out URLs; one per app (``app[UPLOADS]``).

Order of writes, so a crash loses nothing and leaks nothing: the object is
stored first, then its record is written, ``ready`` (one commit, shared with
the other uploads finishing at the same moment: :mod:`.writer`). A failure in
between removes the object; a crash leaves an object with no record, which
the cleanup removes once it is older than its ``max_age`` (see
:meth:`UploadService.cleanup`), and nothing was acknowledged to the client.
Rows ``pending`` (the order before: record first) are still cleaned up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from aiohttp import web

from plugboard import keys
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.uploads import validation
from plugboard.plugins.uploads.config import UploadsConfig
from plugboard.plugins.uploads.tables import TABLE
from plugboard.plugins.uploads.writer import RecordWriter
from plugboard.providers.storage import StorageError

if TYPE_CHECKING:
    from plugboard.graphql.upload import Upload

logger = logging.getLogger("plugboard.plugins.uploads")

#: Storage key prefixes this plugin owns: originals, and image variants.
PREFIX = "uploads/"
VARIANTS_PREFIX = "variants/"
#: The local storage's direct-upload route (S3 and GCS take pre-signed PUTs themselves).
DIRECT_PATH = "/uploads/direct"
#: Stable URLs of public files on storages that have none of their own (local).
PUBLIC_PATH = "/uploads/public"
_PIL_FORMAT = {"jpg": "jpeg"}


class UploadService:
    """Everything the resolvers and the cleanup do with files."""

    def __init__(self, app: web.Application, config: UploadsConfig) -> None:
        self.app = app
        self.config = config
        self._writer: RecordWriter | None = None

    @property
    def writer(self) -> RecordWriter:
        # Made on first use: the records store and tables exist only once the app started.
        if self._writer is None:
            self._writer = RecordWriter(self.records, self.table)
        return self._writer

    # -- dependencies --------------------------------------------------------

    @property
    def storage(self) -> Any:
        return self.app[keys.SERVICES].get("storage", self.config.storage)

    @property
    def table(self) -> sa.Table:
        return self.app[keys.METADATA].tables[TABLE]

    @property
    def records(self) -> Any:
        return self.app[keys.RECORDS]

    def jobs(self) -> Any | None:
        """The jobs API when the jobs plugin runs process-image on the same storage service, else None."""
        try:
            from plugboard.plugins.jobs.keys import JOBS
        except ImportError:  # pragma: no cover - the jobs plugin ships with the core
            return None
        jobs = self.app.get(JOBS)
        if jobs is None:
            return None
        jobs_config = self.app[keys.PLUGIN_CONFIGS].get("jobs")
        if jobs_config is None or not jobs_config.jobs.file_processing or jobs_config.files.storage != self.config.storage:
            return None
        return jobs

    # -- uploads -------------------------------------------------------------

    async def upload(self, upload: "Upload", *, owner: str | None, visibility: str) -> dict[str, Any]:
        """Validate and store one multipart upload; the new record."""
        config = self.config
        if upload.size == 0:
            raise validation.UploadRefused(f"{upload.filename or 'the file'} is empty (0 bytes)", "EMPTY_FILE")
        if upload.size > config.max_file_size:
            raise validation.UploadRefused(
                f"{upload.filename or 'the file'} is {upload.size} bytes, over the limit of {config.max_file_size}",
                "FILE_TOO_LARGE",
            )
        upload.seek(0)
        head = await upload.read(validation.SNIFF_BYTES)
        upload.seek(0)
        mimetype = validation.check_type(head, upload.mimetype, config.allowed_types)
        dims = None
        if mimetype.startswith("image/"):
            dims = await asyncio.to_thread(validation.check_image, upload.file, max_pixels=config.max_pixels)
        filename = validation.normalise_filename(upload.filename, max_length=config.max_filename_length, mimetype=mimetype)
        id = uuid.uuid4().hex
        key = f"{PREFIX}{id}{validation.extension(mimetype)}"
        row = {
            "id": id,
            "key": key,
            "storage": config.storage,
            "filename": filename,
            "mimetype": mimetype,
            "encoding": upload.encoding or "7bit",
            "size": upload.size,
            "owner": owner,
            "visibility": visibility,
            "status": "ready",
            "variants": [],
            "processing": False,
            "job_id": None,
            "created_at": dt.datetime.now(dt.timezone.utc),
            "expires_at": None,
        }
        try:
            upload.seek(0)
            # The spooled file itself: providers read it in parts of their own size.
            await self.storage.put(key, upload.file, content_type=mimetype)
        except BaseException as e:
            await self._forget(id, key)
            if isinstance(e, (StorageError, OSError)) or _is_client_error(e):
                logger.warning("uploads: storing %s failed: %s", key, e)
                raise GraphQLError(f"the file could not be stored: {_describe(e)}", "STORAGE_UNAVAILABLE") from e
            raise
        try:
            if mimetype.startswith("image/") and config.image_optimization.enabled:
                row.update(await self._variants(id, key, owner, dims))
            await self.writer.insert(row)
        except BaseException:
            await self._forget(id, key, variants=row["variants"])
            raise
        return row

    async def _forget(self, id: str, key: str, *, variants: list[dict[str, Any]] | None = None) -> None:
        """Remove a failed upload's objects (if any) and record."""
        for name in [key, *(v["key"] for v in variants or [] if v["key"] != key)]:
            try:
                await self.storage.delete(name)
            except Exception as e:  # the storage is what failed: the cleanup retries later
                logger.warning("uploads: could not remove %s after a failed upload: %s", name, e)
        async with self.records.begin() as conn:
            await conn.execute(self.table.delete().where(self.table.c.id == id))

    # -- direct uploads ------------------------------------------------------

    async def prepare(self, *, filename: str, mimetype: str, size: int, owner: str | None, visibility: str) -> dict[str, Any]:
        """Reserve a direct upload: a record ``uploading`` and signed instructions for the client."""
        config = self.config
        mimetype = validation.normalise_type(mimetype)
        if not isinstance(size, int) or size <= 0:
            raise validation.UploadRefused("size must be a positive number of bytes", "EMPTY_FILE")
        if size > config.max_file_size:
            raise validation.UploadRefused(f"{size} bytes is over the limit of {config.max_file_size}", "FILE_TOO_LARGE")
        if not mimetype or mimetype == validation.OCTET_STREAM or not validation.type_allowed(mimetype, config.allowed_types):
            raise validation.UploadRefused(
                f"files of type {mimetype or '(none)'} are not accepted (allowed: {', '.join(config.allowed_types)})",
                "FILE_TYPE_NOT_ALLOWED",
            )
        id = uuid.uuid4().hex
        key = f"{PREFIX}{id}{validation.extension(mimetype)}"
        now = dt.datetime.now(dt.timezone.utc)
        expires_at = now + dt.timedelta(seconds=config.direct_upload_expiry)
        storage = self.storage
        if hasattr(storage, "presigned_put"):
            instructions = await storage.presigned_put(key, content_type=mimetype, size=size, expires_in=config.direct_upload_expiry)
        elif hasattr(storage, "presigned_post"):
            instructions = await storage.presigned_post(key, content_type=mimetype, size=size, expires_in=config.direct_upload_expiry)
        elif hasattr(storage, "signer"):
            expires = int(expires_at.timestamp())
            signature = self.direct_signature(id, size, mimetype, expires)
            base = getattr(storage.config, "base_url", "").rstrip("/")
            instructions = {
                "method": "PUT",
                "url": f"{base}{DIRECT_PATH}/{id}?expires={expires}&signature={signature}",
                "headers": {"Content-Type": mimetype, "Content-Length": str(size)},
            }
        else:
            raise GraphQLError(f"the {config.storage!r} storage service does not take direct uploads", "NOT_SUPPORTED")
        async with self.records.begin() as conn:
            await conn.execute(
                self.table.insert().values(
                    id=id,
                    key=key,
                    storage=config.storage,
                    filename=validation.normalise_filename(filename, max_length=config.max_filename_length, mimetype=mimetype),
                    mimetype=mimetype,
                    encoding="binary",
                    size=size,
                    owner=owner,
                    visibility=visibility,
                    status="uploading",
                    variants=[],
                    processing=False,
                    job_id=None,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return {"id": id, "fields": None, **instructions, "expiresAt": expires_at}  # fields: POST uploads only

    def direct_signature(self, id: str, size: int, mimetype: str, expires: int) -> str:
        import hashlib
        import hmac

        message = f"uploads-direct\n{id}\n{size}\n{mimetype}\n{expires}".encode()
        return hmac.new(self.app[keys.FILE_SIGNER].secret, message, hashlib.sha256).hexdigest()

    async def pending_direct(self, id: Any) -> dict[str, Any] | None:
        if not isinstance(id, str) or len(id) != 32:
            return None
        async with self.records.connect() as conn:
            row = (await conn.execute(sa.select(self.table).where(self.table.c.id == id, self.table.c.status == "uploading"))).first()
        return dict(row._mapping) if row is not None else None

    async def receive_direct(self, request: web.Request) -> web.Response:
        """``PUT <DIRECT_PATH>/{id}``: the local storage's stand-in for a pre-signed PUT."""
        id = request.match_info["id"]
        row = await self.pending_direct(id)
        expires = request.query.get("expires", "")
        signature = request.query.get("signature", "")
        if row is None or not expires.isdigit() or len(expires) > 15:
            return _text(403, "this upload URL is not valid (unknown, already used or malformed)")
        good = self.direct_signature(id, row["size"], row["mimetype"], int(expires))
        import hmac

        if not hmac.compare_digest(good, signature):
            return _text(403, "this upload URL's signature does not match")
        if int(expires) < dt.datetime.now(dt.timezone.utc).timestamp():
            return _text(403, "this upload URL has expired")
        if validation.normalise_type(request.headers.get("Content-Type")) != row["mimetype"]:
            return _text(400, f"Content-Type must be {row['mimetype']}, as prepared")
        if request.content_length != row["size"]:
            return _text(400, f"Content-Length must be {row['size']}, as prepared")

        async def body() -> Any:
            received = 0
            head = bytearray()
            async for chunk in request.content.iter_chunked(256 * 1024):
                received += len(chunk)
                if received > row["size"]:
                    raise web.HTTPRequestEntityTooLarge(max_size=row["size"], actual_size=received)
                if len(head) < validation.SNIFF_BYTES:
                    # Refused on the first bytes, as a multipart upload is: the rest is never stored.
                    head += chunk[: validation.SNIFF_BYTES - len(head)]
                    if len(head) >= validation.SNIFF_BYTES or received == row["size"]:
                        sniffed = validation.sniff(bytes(head), row["mimetype"])
                        if sniffed != row["mimetype"]:
                            raise _DirectRefused(f"the content is {sniffed}, not the prepared {row['mimetype']}")
                yield chunk

        try:
            await self.storage.put(row["key"], body(), content_type=row["mimetype"])
        except _DirectRefused as e:
            return _text(400, str(e))
        except web.HTTPException:
            raise
        except (StorageError, OSError) as e:
            return _text(503, f"the file could not be stored: {_describe(e)}")
        return web.Response(status=200)

    async def complete(self, row: dict[str, Any]) -> dict[str, Any]:
        """Verify a direct upload's object against what was prepared; the ready record, or an error (and nothing left).

        The store's own enforcement (signed Content-Length and Content-Type,
        which S3 and GCS check and their emulators do not) is not relied on:
        the size comes from a HEAD, the type from a ranged GET of the first
        bytes, and an image is decoded with Pillow, cheapest first, so an
        oversize or spoofed object is refused (and deleted) without being
        downloaded.
        """
        if row["expires_at"] is not None and row["expires_at"] < dt.datetime.now(dt.timezone.utc):
            await self._forget(row["id"], row["key"])
            raise validation.UploadRefused("this direct upload has expired; prepare it again", "UPLOAD_EXPIRED")
        try:
            stored = await self.storage.stat(row["key"])
        except FileNotFoundError:
            raise validation.UploadRefused("nothing was uploaded yet for this file", "UPLOAD_INCOMPLETE") from None
        try:
            dims = await self._verify_object(row, stored.size)
        except validation.UploadRefused:
            await self._forget(row["id"], row["key"])
            raise
        row = {**row, "status": "ready", "expires_at": None}
        if row["mimetype"].startswith("image/") and self.config.image_optimization.enabled:
            row.update(await self._variants(row["id"], row["key"], row["owner"], dims))
        async with self.records.begin() as conn:
            await conn.execute(
                self.table.update()
                .where(self.table.c.id == row["id"], self.table.c.status == "uploading")
                .values(status="ready", expires_at=None, variants=row["variants"], processing=row["processing"], job_id=row["job_id"])
            )
        return row

    async def _verify_object(self, row: dict[str, Any], size: int) -> tuple[int, int] | None:
        """Size (HEAD), type (first bytes), then an image's decode; UploadRefused for the first violation."""
        config = self.config
        if size != row["size"]:
            raise validation.UploadRefused(f"the uploaded object has {size} bytes, not the {row['size']} prepared", "FILE_SIZE_MISMATCH")
        if size > config.max_file_size:  # prepared under a larger limit since lowered
            raise validation.UploadRefused(f"the uploaded object is {size} bytes, over the limit of {config.max_file_size}", "FILE_TOO_LARGE")
        head = await self._read_head(row["key"], validation.SNIFF_BYTES)
        sniffed = validation.sniff(head, row["mimetype"])
        if sniffed != row["mimetype"]:
            raise validation.UploadRefused(f"the uploaded object's content is {sniffed}, not the prepared {row['mimetype']}", "FILE_TYPE_MISMATCH")
        if not validation.type_allowed(sniffed, config.allowed_types):
            raise validation.UploadRefused(
                f"files of type {sniffed} are not accepted (allowed: {', '.join(config.allowed_types)})", "FILE_TYPE_NOT_ALLOWED"
            )
        if not sniffed.startswith("image/"):
            return None
        info = getattr(self.storage, "image_info", None)
        if info is not None:
            # The store decoded the image itself (Cloudinary): its answer stands for Pillow's.
            width, height = await info(row["key"])
            if width * height > config.max_pixels:
                raise validation.UploadRefused(f"the image has {width}x{height} pixels, more than the limit of {config.max_pixels}", "IMAGE_TOO_LARGE")
            return width, height

        with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as file:
            received = 0
            async for chunk in self.storage.open(row["key"]):
                received += len(chunk)
                if received > size:  # replaced since the HEAD: never read more than was checked
                    raise validation.UploadRefused("the uploaded object changed while it was verified", "FILE_SIZE_MISMATCH")
                await asyncio.to_thread(file.write, chunk)
            return await asyncio.to_thread(validation.check_image, file, max_pixels=config.max_pixels)

    async def _read_head(self, key: str, n: int) -> bytes:
        """The object's first ``n`` bytes: a ranged GET where the storage has one, else the start of a download."""
        read_head = getattr(self.storage, "read_head", None)
        if read_head is not None:
            return await read_head(key, n)
        head = bytearray()
        stream = self.storage.open(key)
        try:
            async for chunk in stream:
                head += chunk
                if len(head) >= n:
                    break
        finally:
            await stream.aclose()
        return bytes(head[:n])

    # -- image variants ------------------------------------------------------

    def variant_outputs(self) -> list[dict[str, Any]]:
        from plugboard.plugins.jobs.builtin.images import supported_formats

        options = self.config.image_optimization
        available = supported_formats()
        formats = [f for f in dict.fromkeys(_PIL_FORMAT.get(f, f) for f in options.formats) if f in available]
        return [
            {"width": size, "format": fmt, "quality": options.quality, "fit": "contain"}
            for size in options.sizes
            for fmt in formats
        ]

    async def _variants(self, id: str, key: str, owner: str | None, dims: tuple[int, int] | None) -> dict[str, Any]:
        outputs = self.variant_outputs()
        if not outputs:
            return {"variants": [], "processing": False, "job_id": None}
        storage = self.storage
        if hasattr(storage, "variant_url") and dims:
            # The storage makes optimised copies on delivery (Cloudinary's transformations).
            width, height = dims
            variants = []
            for out in outputs:
                w = min(out["width"], width)
                variants.append({"key": key, "transformation": True, "format": out["format"], "width": w, "height": round(height * w / width), "size": None})
            return {"variants": variants, "processing": False, "job_id": None}
        jobs = self.jobs()
        if jobs is not None:
            job = await jobs.enqueue("process-image", {"source": key, "outputs": outputs, "prefix": f"{VARIANTS_PREFIX}{id}"}, owner=owner)
            return {"variants": [], "processing": True, "job_id": job.id}
        timeout = self.config.image_optimization.sync_timeout
        try:
            variants = await asyncio.wait_for(self._render(id, key, outputs), timeout)
        except asyncio.TimeoutError:
            logger.warning("uploads: variants of %s took longer than %ss; the file has none", key, timeout)
            variants = []
        return {"variants": variants, "processing": False, "job_id": None}

    async def _render(self, id: str, key: str, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Make the variants here (the jobs plugin is off): the same code as process-image."""
        from plugboard.plugins.jobs.builtin.config import BuiltinConfig
        from plugboard.plugins.jobs.builtin.images import FORMATS, open_image, parse_outputs, render

        data = await self.storage.read(key)
        image = await asyncio.to_thread(open_image, data, self.config.max_pixels)
        specs = parse_outputs(outputs, BuiltinConfig())
        variants = []
        for spec in specs:
            encoded, width, height = await asyncio.to_thread(render, image, spec)
            _pil, ext, content_type, _feature = FORMATS[spec.format]
            vkey = f"{VARIANTS_PREFIX}{id}/{width}x{height}.{ext}"
            await self.storage.put(vkey, encoded, content_type=content_type)
            variants.append({"key": vkey, "format": spec.format, "width": width, "height": height, "size": len(encoded)})
        return variants

    async def refresh(self, row: dict[str, Any]) -> dict[str, Any]:
        """A processing file's record, updated from its job once that finished."""
        if not row["processing"] or not row["job_id"]:
            return row
        jobs = self.jobs()
        job = await jobs.get(row["job_id"]) if jobs is not None else None
        from plugboard.plugins.jobs.model import FINISHED, JobStatus

        if job is not None and job.status not in FINISHED:
            return row
        variants = []
        if job is not None and job.status == JobStatus.COMPLETED and isinstance(job.result, dict):
            variants = [
                {k: out[k] for k in ("key", "format", "width", "height", "size")} for out in job.result.get("outputs", [])
            ]
        async with self.records.begin() as conn:
            await conn.execute(self.table.update().where(self.table.c.id == row["id"]).values(variants=variants, processing=False))
        return {**row, "variants": variants, "processing": False}

    # -- reading, access -----------------------------------------------------

    async def get(self, id: Any) -> dict[str, Any] | None:
        if not isinstance(id, str) or len(id) != 32:
            return None
        async with self.records.connect() as conn:
            row = (await conn.execute(sa.select(self.table).where(self.table.c.id == id, self.table.c.status == "ready"))).first()
        return dict(row._mapping) if row is not None else None

    async def page(self, *, owner: str | None, everyone: bool, first: int, after: str | None) -> list[dict[str, Any]]:
        t = self.table
        query = sa.select(t).where(t.c.status == "ready")
        if not everyone:
            query = query.where(t.c.owner == owner)
        if after is not None:
            anchor = await self.get(after)
            if anchor is None:
                raise GraphQLError(f"after: no file {after!r}", "BAD_USER_INPUT")
            query = query.where(
                sa.or_(t.c.created_at < anchor["created_at"], sa.and_(t.c.created_at == anchor["created_at"], t.c.id < anchor["id"]))
            )
        query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(first)
        async with self.records.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def delete(self, row: dict[str, Any]) -> None:
        """Remove the record first (the file disappears at once), then the objects."""
        async with self.records.begin() as conn:
            await conn.execute(self.table.delete().where(self.table.c.id == row["id"]))
        for key in dict.fromkeys([row["key"], *(v["key"] for v in row["variants"] or [])]):
            try:
                await self.storage.delete(key)
            except Exception as e:  # the record is gone: the cleanup removes the orphan later
                logger.warning("uploads: could not delete %s: %s", key, e)

    async def set_visibility(self, row: dict[str, Any], visibility: str) -> dict[str, Any]:
        async with self.records.begin() as conn:
            await conn.execute(self.table.update().where(self.table.c.id == row["id"]).values(visibility=visibility))
        return {**row, "visibility": visibility}

    async def variant_url(self, row: dict[str, Any], variant: dict[str, Any]) -> str:
        if variant.get("transformation"):
            return self.storage.variant_url(variant["key"], width=variant["width"], format=variant["format"])
        return await self.url(row, variant["key"])

    async def url(self, row: dict[str, Any], key: str | None = None) -> str:
        key = key or row["key"]
        storage = self.storage
        if row["visibility"] == "public":
            if hasattr(storage, "public_url"):
                return await storage.public_url(key)
            # A storage without stable URLs (local): this plugin's public route.
            base = getattr(getattr(storage, "config", None), "base_url", "").rstrip("/")
            suffix = "" if key == row["key"] else "/" + key.rsplit("/", 1)[-1]
            return f"{base}{PUBLIC_PATH}/{row['id']}{suffix}"
        return await storage.url(key, expires_in=self.config.url_expiry)

    async def serve_public(self, request: web.Request) -> web.StreamResponse:
        """``GET <PUBLIC_PATH>/{id}[/{variant}]``: a public file (or variant) at a stable URL."""
        row = await self.get(request.match_info["id"])
        if row is None or row["visibility"] != "public":
            raise web.HTTPNotFound()
        key, mimetype = row["key"], row["mimetype"]
        name = request.match_info.get("variant")
        if name:
            found = [v for v in row["variants"] or [] if v["key"].rsplit("/", 1)[-1] == name]
            if not found:
                raise web.HTTPNotFound()
            key, mimetype = found[0]["key"], "image/" + found[0]["format"]
        response = web.StreamResponse(headers={"Content-Type": mimetype, "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
        await response.prepare(request)
        async for chunk in self.storage.open(key):
            await response.write(chunk)
        await response.write_eof()
        return response

    # -- cleanup -------------------------------------------------------------

    async def cleanup(self, *, max_age: float = 3600.0) -> dict[str, int]:
        """Remove what a crash or an abandoned upload left: nothing newer than ``max_age`` seconds is touched.

        - ``pending``: rows of the old record-first write order, with their object;
        - ``expired``: direct uploads never completed in time, with whatever was uploaded;
        - ``orphans``: objects under our prefixes with no record (a crash between
          storing an object and writing its record);
        - ``missing``: ready records whose object is gone from the storage (checked
          twice: absent from the listing, then a ``stat``), with their variants.

        The age limit keeps an upload in progress on another instance safe.
        """
        t = self.table
        now = dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(seconds=max_age)
        removed = {"pending": 0, "expired": 0, "orphans": 0, "missing": 0}
        async with self.records.connect() as conn:
            stale = (await conn.execute(sa.select(t.c.id, t.c.key).where(t.c.status == "pending", t.c.created_at < cutoff))).all()
            expired = (await conn.execute(sa.select(t.c.id, t.c.key).where(t.c.status == "uploading", t.c.expires_at < now))).all()
        for id, key in stale:
            await self._forget(id, key)
            removed["pending"] += 1
        for id, key in expired:
            await self._forget(id, key)
            removed["expired"] += 1
        async with self.records.connect() as conn:
            rows = (await conn.execute(sa.select(t.c.id, t.c.key, t.c.variants, t.c.status, t.c.created_at))).all()
        known = {r.key for r in rows} | {v["key"] for r in rows for v in (r.variants or [])}
        ids = {r.id for r in rows}
        limit = cutoff.timestamp()
        listed: set[str] = set()
        for prefix in (PREFIX, VARIANTS_PREFIX):
            async for stored in self.storage.list(prefix):
                listed.add(stored.key)
                if stored.key in known or stored.modified > limit:
                    continue
                # A variant of a file still processing is not yet in its record.
                if prefix == VARIANTS_PREFIX and stored.key[len(prefix) :].split("/", 1)[0] in ids:
                    continue
                await self.storage.delete(stored.key)
                removed["orphans"] += 1
        for r in rows:
            if r.status != "ready" or r.key in listed or r.created_at > cutoff:
                continue
            if await self.storage.exists(r.key):  # listed under another spelling: keep it
                continue
            await self._forget(r.id, r.key, variants=r.variants)
            removed["missing"] += 1
        return removed


class _DirectRefused(Exception):
    """A direct upload to the local route whose first bytes contradict the prepared type."""


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _is_client_error(e: BaseException) -> bool:
    """botocore / aiohttp client errors: the storage backend refused or is unreachable."""
    module = type(e).__module__
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "gcloud"))


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text[:300]
