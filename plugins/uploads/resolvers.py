"""The File API's resolvers; the service comes from the app on the context, never a global."""

from __future__ import annotations

from typing import Any

from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.upload import Upload
from plugboard.plugins.uploads.keys import UPLOADS
from plugboard.plugins.uploads.service import UploadService


def _service(context: Any) -> UploadService:
    return context.app[UPLOADS]


def _owner(context: Any) -> str | None:
    identity = context.identity
    return None if identity is None else str(identity)


def _may_upload(context: Any, service: UploadService) -> str | None:
    owner = _owner(context)
    if owner is None and not service.config.allow_anonymous and not is_admin(context):
        raise GraphQLError("uploading needs an identity (sign in)", "UNAUTHENTICATED")
    return owner


def _may_see(context: Any, row: dict[str, Any]) -> bool:
    return row["visibility"] == "public" or _may_change(context, row)


def _may_change(context: Any, row: dict[str, Any]) -> bool:
    owner = _owner(context)
    return is_admin(context) or (owner is not None and owner == row["owner"])


def _visibility(args: dict, service: UploadService) -> str:
    value = args.get("visibility")
    return value.lower() if isinstance(value, str) else service.config.default_visibility


async def _file(service: UploadService, row: dict[str, Any]) -> dict[str, Any]:
    row = await service.refresh(row)
    return {
        "id": row["id"],
        "filename": row["filename"],
        "mimetype": row["mimetype"],
        "encoding": row["encoding"],
        "url": await service.url(row),
        "size": row["size"],
        "createdAt": row["created_at"],
        "owner": row["owner"],
        "visibility": row["visibility"].upper(),
        "variants": [
            {**{k: v.get(k) for k in ("format", "width", "height", "size")}, "url": await service.variant_url(row, v)}
            for v in row["variants"] or []
        ],
        "processing": bool(row["processing"]),
        "jobId": row["job_id"],
    }


def _upload_arg(value: Any) -> Upload:
    if not isinstance(value, Upload):
        raise GraphQLError("expected a file sent with the GraphQL multipart request spec", "BAD_USER_INPUT")
    return value


async def resolve_upload_file(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    service = _service(context)
    owner = _may_upload(context, service)
    row = await service.upload(_upload_arg(args["file"]), owner=owner, visibility=_visibility(args, service))
    return await _file(service, row)


async def resolve_upload_multiple_files(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    service = _service(context)
    owner = _may_upload(context, service)
    files = [_upload_arg(f) for f in args["files"]]
    if len(files) > service.config.max_files:
        raise GraphQLError(f"{len(files)} files sent; at most {service.config.max_files} per request", "TOO_MANY_FILES")
    if not files:
        raise GraphQLError("no files sent", "BAD_USER_INPUT")
    visibility = _visibility(args, service)
    rows: list[dict[str, Any]] = []
    try:
        for upload in files:
            rows.append(await service.upload(upload, owner=owner, visibility=visibility))
    except BaseException:
        # All or nothing: a refused file undoes the ones stored before it.
        for row in rows:
            await service.delete(row)
        raise
    return [await _file(service, row) for row in rows]


async def resolve_prepare_upload(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    service = _service(context)
    owner = _may_upload(context, service)
    return await service.prepare(
        filename=args["filename"], mimetype=args["mimetype"], size=args["size"], owner=owner, visibility=_visibility(args, service)
    )


async def resolve_complete_upload(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    service = _service(context)
    row = await service.pending_direct(args["id"])
    if row is None or not _may_change(context, row):
        raise GraphQLError(f"no direct upload {args['id']!r} waiting to complete", "NOT_FOUND")
    return await _file(service, await service.complete(row))


async def _owned(context: Any, id: Any) -> tuple[UploadService, dict[str, Any]]:
    service = _service(context)
    row = await service.get(id)
    if row is None or not _may_see(context, row):
        raise GraphQLError(f"no file {id!r}", "NOT_FOUND")
    if not _may_change(context, row):
        raise GraphQLError("only the file's owner or an admin may change it", "FORBIDDEN")
    return service, row


async def resolve_delete_file(parent: Any, args: dict, context: Any, info: Any) -> bool:
    service, row = await _owned(context, args["id"])
    await service.delete(row)
    return True


async def resolve_set_file_visibility(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    service, row = await _owned(context, args["id"])
    return await _file(service, await service.set_visibility(row, args["visibility"].lower()))


async def resolve_file(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any] | None:
    service = _service(context)
    row = await service.get(args["id"])
    if row is None or not _may_see(context, row):
        return None
    return await _file(service, row)


async def resolve_files(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    service = _service(context)
    config = service.config
    first = args.get("first")
    first = config.default_page_size if first is None else first
    if not 0 <= first <= config.max_page_size:
        raise GraphQLError(f"first must be between 0 and {config.max_page_size}", "BAD_USER_INPUT")
    admin = is_admin(context)
    owner = _owner(context)
    if owner is None and not admin:
        return []
    rows = await service.page(owner=owner, everyone=admin, first=first, after=args.get("after"))
    return [await _file(service, row) for row in rows]


RESOLVERS = {
    "Mutation.uploadFile": resolve_upload_file,
    "Mutation.uploadMultipleFiles": resolve_upload_multiple_files,
    "Mutation.deleteFile": resolve_delete_file,
    "Mutation.setFileVisibility": resolve_set_file_visibility,
    "Mutation.prepareUpload": resolve_prepare_upload,
    "Mutation.completeUpload": resolve_complete_upload,
    "Query.file": resolve_file,
    "Query.files": resolve_files,
}
