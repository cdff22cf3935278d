"""aiohttp middleware: the core's request id, and plugins' middleware in declared order."""

from __future__ import annotations

import random
import re
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import web

from plugboard.pluginmanager import PluginManager

REQUEST_ID = web.RequestKey("plugboard.request_id", str)
REQUEST_ID_HEADER = "X-Request-ID"
# Client-sent ids are echoed into logs and headers: keep them short and plain.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The random module's generator: reseeded in a forked child, so processes never share ids.
_random_bits = random.getrandbits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
def request_id_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Give every request an id (the client's ``X-Request-ID`` if sane); :func:`echo_request_id` sends it back.

    A plain function handing back the handler's coroutine: a coroutine here
    would be resumed at every await of every request.
    """
    sent = request.headers.get(REQUEST_ID_HEADER)
    # 128 random bits in hex, as uuid4().hex reads, without building a UUID
    # or a system call: an id tells requests apart, it guards nothing.
    request[REQUEST_ID] = sent if sent and _SAFE_ID.match(sent) else "%032x" % _random_bits(128)
    return handler(request)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request's id on every response, streamed ones (SSE, WebSocket handshakes) and errors included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def collect_middleware(pm: PluginManager, app: web.Application, configs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each plugin's middlewares, the first declared plugin's outermost."""
    for plugin, returned in pm.call_each("plugboard_middleware", app=app, configs=configs):
        for middleware in returned or []:
            yield plugin, middleware
