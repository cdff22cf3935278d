"""Downloads of locally stored files: ``GET <server.files_path>/{key}?expires=...&signature=...``.

The URLs come from :meth:`plugboard.providers.storage.LocalStorage.url`; a
valid, unexpired signature is the only access check (whoever holds the URL
may download until it expires). Answers: 400 for a key that is not a storage
key (path traversal included), 403 for a missing, bad or expired signature,
404 for a file that is not there. Files are sent as attachments, except
raster images, with ``nosniff`` so a stored HTML document never runs as a
page of this origin.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from plugboard import keys
from plugboard.providers.storage import InvalidKey, LocalStorage, check_key, files_root

_EXPIRES = re.compile(r"[0-9]{1,15}")
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})


async def download(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    try:
        check_key(key)
    except InvalidKey as e:
        raise web.HTTPBadRequest(text=str(e))
    expires = request.query.get("expires")
    if expires is not None and not _EXPIRES.fullmatch(expires):
        # str.isdigit() admits non-ASCII digits and int() refuses over 4,300
        # digits: check the form here, so odd numbers are a 400, not a 500.
        return web.json_response({"error": "'expires' must be a Unix time in ASCII digits"}, status=400)
    signer = request.app[keys.FILE_SIGNER]
    if not signer.verify(key, request.query.get("expires"), request.query.get("signature")):
        raise web.HTTPForbidden(text="missing, invalid or expired signature")
    storage = LocalStorage(root=_root(request.app), signer=signer)
    try:
        path = storage.path(key)
    except InvalidKey as e:
        raise web.HTTPBadRequest(text=str(e))
    if not path.is_file():
        raise web.HTTPNotFound(text="no such file")
    content_type = storage.content_type(key)
    disposition = "inline" if content_type in _INLINE_TYPES else "attachment"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(disposition, key.rsplit("/", 1)[-1]),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=0",
        },
    )


def content_disposition(disposition: str, filename: str) -> str:
    """``attachment; filename="..."; filename*=UTF-8''...`` (RFC 6266), safe for any name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _root(app: web.Application):
    core = app[keys.CORE_CONFIG]
    return files_root(app[keys.SETTINGS].root / core.server.data_dir)
