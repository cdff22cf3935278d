"""Server side of the GraphQL multipart request spec (jaydenseric/graphql-multipart-request-spec).

A multipart/form-data request carries an ``operations`` field (the JSON
operation, or a list of them for batching), then a ``map`` field (JSON: file
field name -> list of dotted object paths into operations, such as
``"variables.file"`` or ``"0.variables.files.1"``), then one file part per map
key. :func:`read_multipart` reads them in that order off aiohttp's streaming
multipart reader, validates every map path before any file is read (each must
exist in operations with the value null), streams each file chunk by chunk
into a spooled temporary file (memory stays flat whatever the file size),
enforces the size and count limits as bytes arrive, and puts the resulting
:class:`~plugboard.graphql.upload.Upload` objects at the mapped paths. Any
failure closes every temporary file already opened before raising
:class:`MultipartError`, whose ``status`` (400 or 413) and ``message`` the HTTP
transport turns into its error response.

Plugins may set stricter rules for the fields they own
(:class:`~plugboard.graphql.upload.UploadRules`): given ``rules_for``, the
reader learns which fields each file reaches before reading any, enforces
the smallest size limit as bytes arrive, and hands the first bytes to the
fields' checks, so a refused file is never received in full.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import tempfile
from typing import IO, Any, Callable, Mapping, Sequence

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.upload import DEFAULT_ENCODING, DEFAULT_MIMETYPE, Upload, UploadHead, UploadRules
from plugboard.transports.upload_rules import FileSlot

# aiohttp hands back at most this much per read_chunk call.
_READ_CHUNK = 64 * 1024
# Disk writes are batched to this size so each thread hop moves a useful amount.
_WRITE_CHUNK = 1024 * 1024

_SPEC = "(GraphQL multipart request spec: 'operations', then 'map', then the files)"

# What a truncated, malformed or abandoned body makes aiohttp's reader raise.
# LookupError: an unknown charset in a part's RFC 5987 filename*.
_MALFORMED = (ValueError, LookupError, HttpProcessingError, EOFError)

_Container = dict[str, Any] | list[Any]
#: ``rules_for(operations)``: file name -> ``(field coordinate, rules)`` for
#: each ruled field the file reaches; ``operations`` holds a FileSlot per file.
RulesFor = Callable[[Any], Mapping[str, Sequence[tuple[str, UploadRules]]]]


def request_media_type(request: web.BaseRequest) -> str:
    """The request's media type, lowercased, without parameters (``application/octet-stream`` when unset).

    What ``request.content_type`` gives, without its cost: aiohttp parses the
    header with the email package on every new value, and each multipart
    request's boundary makes its value new.
    """
    value = request.headers.get(hdrs.CONTENT_TYPE)
    return value.split(";", 1)[0].strip().lower() if value else "application/octet-stream"


class MultipartError(Exception):
    """A multipart request the server refuses: ``status`` (400, 413, or a field check's), ``message`` and ``code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ("PAYLOAD_TOO_LARGE" if status == 413 else "BAD_REQUEST")


class MultipartRequest:
    """The outcome of :func:`read_multipart`.

    ``operations`` is the parsed ``operations`` field (a dict, or a list of
    dicts for a batch) with :class:`Upload` objects at the mapped paths;
    ``uploads`` lists each received file once, in arrival order (a file mapped
    to two paths is one Upload at both). :meth:`close` deletes the files.
    """

    def __init__(self, operations: dict[str, Any] | list[Any], uploads: list[Upload]) -> None:
        self.operations = operations
        self.uploads = uploads

    async def close(self) -> None:
        """Close and delete every temporary file. Safe to call more than once."""
        for upload in self.uploads:
            upload.close()

    async def __aenter__(self) -> MultipartRequest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def read_multipart(
    request: web.Request,
    *,
    max_file_size: int,
    max_files: int,
    max_operations_size: int,
    spool_threshold: int = 1024 * 1024,
    tmp_dir: str | None = None,
    rules_for: RulesFor | None = None,
) -> MultipartRequest:
    """Read a GraphQL multipart request; the caller must ``await result.close()`` when done.

    :param max_file_size: bytes allowed per file (413 beyond, detected as it streams).
    :param max_files: files allowed per request (413 beyond, checked on ``map``).
    :param max_operations_size: bytes allowed for each of ``operations`` and ``map`` (413 beyond).
    :param spool_threshold: a file stays in memory up to this many bytes, then moves to disk.
    :param tmp_dir: where on-disk files go (the system temporary directory if None).
    :param rules_for: finds the field rules for each file (see :data:`RulesFor`).
    :raises MultipartError: for anything the spec or the limits refuse, and for
        a body that is malformed or cut short (the client disconnected).
    """
    if request_media_type(request) != "multipart/form-data":
        raise MultipartError(400, f"Multipart requests must have Content-Type multipart/form-data, got {request_media_type(request)!r}")
    opened: list[IO[bytes]] = []
    try:
        return await _read(
            request,
            opened,
            max_file_size=max_file_size,
            max_files=max_files,
            max_operations_size=max_operations_size,
            spool_threshold=spool_threshold,
            tmp_dir=tmp_dir,
            rules_for=rules_for,
        )
    except BaseException as exc:
        # Also on cancellation: a half-written temporary file must not outlive
        # the request, whatever ended it.
        for file in opened:
            file.close()
        if isinstance(exc, MultipartError):
            raise
        if isinstance(exc, ConnectionError):
            raise MultipartError(400, "The client disconnected before the multipart request was complete") from exc
        if isinstance(exc, _MALFORMED):
            raise MultipartError(400, f"Malformed multipart request body: {exc}") from exc
        raise


async def _read(
    request: web.Request,
    opened: list[IO[bytes]],
    *,
    max_file_size: int,
    max_files: int,
    max_operations_size: int,
    spool_threshold: int,
    tmp_dir: str | None,
    rules_for: RulesFor | None,
) -> MultipartRequest:
    reader = await request.multipart()

    part = await reader.next()
    # Each read of part.name / part.filename parses the Content-Disposition header again.
    if not isinstance(part, BodyPartReader) or part.name != "operations":
        if part is None:
            raise MultipartError(400, f"The multipart request has no 'operations' field {_SPEC}")
        raise MultipartError(400, f"The first multipart field must be 'operations', got {_part_name(part)} {_SPEC}")
    operations = _parse_operations(await _read_field(part, "operations", max_operations_size))

    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "map":
        if part is None:
            raise MultipartError(400, f"The multipart request has no 'map' field {_SPEC}")
        raise MultipartError(400, f"The second multipart field must be 'map', got {_part_name(part)} {_SPEC}")
    mapping = _parse_map(await _read_field(part, "map", max_operations_size))
    if len(mapping) > max_files:
        raise MultipartError(413, f"Too many files: the request maps {len(mapping)} files, the limit is {max_files}")
    # Every path is checked before any file is read, so a bad request costs
    # the client no upload and the server no disk.
    targets = _resolve_targets(operations, mapping)
    rules = _find_rules(operations, targets, rules_for) if rules_for is not None and targets else {}

    uploads: list[Upload] = []
    received: set[str] = set()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise MultipartError(400, "Nested multipart parts are not supported in a GraphQL multipart request")
        name, filename = part.name, part.filename or ""
        if name is None or name not in targets:
            raise MultipartError(400, f"Unexpected multipart field {_part_name(part)}: it is not named in 'map'")
        if name in received:
            raise MultipartError(400, f"File {name!r} was sent more than once")
        received.add(name)
        file = tempfile.SpooledTemporaryFile(max_size=spool_threshold, mode="w+b", dir=tmp_dir, prefix="plugboard-upload-")
        opened.append(file)
        mimetype = part.headers.get(hdrs.CONTENT_TYPE) or DEFAULT_MIMETYPE
        size = await _receive_file(
            part,
            file,
            name=name,
            max_size=max_file_size,
            spool_threshold=spool_threshold,
            rules=rules.get(name, ()),
            filename=filename,
            mimetype=mimetype,
        )
        upload = Upload(
            file,
            filename=filename,
            mimetype=mimetype,
            encoding=part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING) or DEFAULT_ENCODING,
            size=size,
        )
        uploads.append(upload)
        for container, key in targets[name]:
            container[key] = upload  # type: ignore[index]

    for key in mapping:
        if key not in received:
            raise MultipartError(400, f"File missing in the request: {key!r}")
    return MultipartRequest(operations, uploads)


def _part_name(part: Any) -> str:
    name = getattr(part, "name", None)
    return repr(name) if name is not None else "an unnamed part"


async def _read_field(part: BodyPartReader, field: str, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise MultipartError(413, f"The {field!r} field is larger than the limit of {limit} bytes")
    return bytes(data)


def _parse_operations(raw: bytes) -> dict[str, Any] | list[Any]:
    try:
        operations = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise MultipartError(400, f"The 'operations' field is not valid JSON: {e}") from None
    if isinstance(operations, dict):
        return operations
    if isinstance(operations, list) and all(isinstance(op, dict) for op in operations):
        return operations
    raise MultipartError(400, "The 'operations' field must be a JSON object, or an array of objects for a batch")


def _parse_map(raw: bytes) -> dict[str, list[str]]:
    try:
        mapping = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise MultipartError(400, f"The 'map' field is not valid JSON: {e}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(paths, list) and all(isinstance(p, str) for p in paths) for paths in mapping.values()
    ):
        raise MultipartError(400, "The 'map' field must be a JSON object mapping file field names to arrays of object paths")
    return mapping


def _resolve_targets(operations: _Container, mapping: dict[str, list[str]]) -> dict[str, list[tuple[_Container, str | int]]]:
    """Where each file goes: (container, key) pairs, validated to hold null."""
    targets: dict[str, list[tuple[_Container, str | int]]] = {}
    # Keyed by the container's identity, not the path text: "fs.1" and
    # "fs.01" are the same slot and must not both receive a file.
    seen: set[tuple[int, str | int]] = set()
    for key, paths in mapping.items():
        slots = targets[key] = []
        for path in paths:
            slot = _locate(operations, path)
            if slot is None:
                raise MultipartError(400, f"Path {path!r} in map entry {key!r} does not exist in operations")
            container, index = slot
            if container[index] is not None:  # type: ignore[index]
                raise MultipartError(400, f"Path {path!r} in map entry {key!r} must be null in operations")
            if (id(container), index) in seen:
                raise MultipartError(400, f"Path {path!r} in map entry {key!r} is mapped more than once")
            seen.add((id(container), index))
            slots.append(slot)
    return targets


def _locate(root: _Container, path: str) -> tuple[_Container, str | int] | None:
    """The container and key a dotted path ends at, or None if any step is missing."""
    container: Any = root
    segments = path.split(".")
    for i, segment in enumerate(segments):
        key: str | int
        if isinstance(container, dict):
            if segment not in container:
                return None
            key = segment
        elif isinstance(container, list):
            # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
            if not (segment.isascii() and segment.isdigit()) or int(segment) >= len(container):
                return None
            key = int(segment)
        else:
            return None
        if i == len(segments) - 1:
            return container, key
        container = container[key]
    return None


def _find_rules(operations: _Container, targets: dict[str, list[tuple[_Container, str | int]]], rules_for: RulesFor) -> Mapping[str, Sequence[tuple[str, UploadRules]]]:
    # Slots stand where the files will go while the rules are looked up, then
    # the paths hold null again (the Uploads replace them as files arrive).
    for name, slots in targets.items():
        for container, key in slots:
            container[key] = FileSlot(name)  # type: ignore[index]
    try:
        return rules_for(operations)
    finally:
        for slots in targets.values():
            for container, key in slots:
                container[key] = None  # type: ignore[index]


async def _receive_file(
    part: BodyPartReader,
    file: IO[bytes],
    *,
    name: str,
    max_size: int,
    spool_threshold: int,
    rules: Sequence[tuple[str, UploadRules]] = (),
    filename: str = "",
    mimetype: str = DEFAULT_MIMETYPE,
) -> int:
    """Stream one file part into ``file``; returns its size, file positioned at 0."""
    limit, limit_field = max_size, None
    for field, rule in rules:
        if rule.max_file_size is not None and rule.max_file_size < limit:
            limit, limit_field = rule.max_file_size, field
    checks = [(field, rule) for field, rule in rules if rule.check is not None]
    head_size = max((rule.head_size for _field, rule in checks), default=0)
    head = bytearray()
    size = 0
    pending = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            if limit_field is None:
                raise MultipartError(413, f"File {name!r} is larger than the limit of {limit} bytes", "FILE_TOO_LARGE")
            raise MultipartError(413, f"File {name!r} is larger than the limit of {limit} bytes for {limit_field}", "FILE_TOO_LARGE")
        if checks:
            head += chunk[: head_size - len(head)]
            if len(head) >= head_size:
                await _check_head(checks, bytes(head), filename=filename, mimetype=mimetype, complete=False)
                checks = []
        pending += chunk
        if len(pending) >= _WRITE_CHUNK:
            await _write(file, pending, on_disk=size > spool_threshold)
            pending = bytearray()
    if checks:
        await _check_head(checks, bytes(head), filename=filename, mimetype=mimetype, complete=True)
    if pending:
        await _write(file, pending, on_disk=size > spool_threshold)
    file.seek(0)
    return size


async def _check_head(checks: list[tuple[str, UploadRules]], head: bytes, *, filename: str, mimetype: str, complete: bool) -> None:
    for field, rule in checks:
        data = head[: rule.head_size]
        try:
            result = rule.check(UploadHead(field, filename, mimetype, data, complete and len(data) == len(head)))  # type: ignore[misc]
            if inspect.isawaitable(result):
                await result
        except GraphQLError as e:
            raise MultipartError(e.http_status, e.message, e.code) from None


async def _write(file: IO[bytes], data: bytearray, *, on_disk: bool) -> None:
    # Below the spool threshold the write is a memory copy; at or past it the
    # file rolls over to disk and writes may block, so they leave the loop.
    if not on_disk:
        file.write(data)
        return
    write = asyncio.ensure_future(asyncio.to_thread(file.write, data))
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        # A thread cannot be interrupted: let the write finish so the cleanup
        # that follows does not close the file while the thread still uses it.
        await asyncio.wait([write])
        if not write.cancelled():
            write.exception()  # retrieved, so asyncio logs no "never retrieved" error
        raise
