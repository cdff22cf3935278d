"""aiohttp middleware: the core's request id, and plugins' middleware in declared order."""

from __future__ import annotations

import os
import re
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import web

from plugboard.pluginmanager import PluginManager

REQUEST_ID = web.RequestKey("plugboard.request_id", str)
REQUEST_ID_HEADER = "X-Request-ID"
# Client-sent ids are echoed into logs and headers: keep them short and plain.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's ``X-Request-ID`` if sane) and echo it back."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    # 128 random bits in hex, as uuid4().hex reads, without building a UUID.
    request_id = sent if _SAFE_ID.match(sent) else os.urandom(16).hex()
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers[REQUEST_ID_HEADER] = request_id
        raise
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def collect_middleware(pm: PluginManager, app: web.Application, configs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each plugin's middlewares, the first declared plugin's outermost."""
    for plugin, returned in pm.call_each("plugboard_middleware", app=app, configs=configs):
        for middleware in returned or []:
            yield plugin, middleware
