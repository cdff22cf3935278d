"""``Cache-Tag``/``Surrogate-Key`` on the core's static and signed-file routes.

GraphQL GET responses get their tags from the response cache step; this
middleware tags what the core serves outside GraphQL, so a CDN in front can
purge it the same way: GraphiQL's assets carry ``static`` (they are already
served ``immutable`` under versioned names), a stored file carries ``file``
and ``file:<key>`` (purge one with ``invalidate(app, ["file:avatars/1.png"])``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from plugboard.plugins.cache.tags import TAG
from plugboard.transports import files, graphiql

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tags_for(request: web.Request) -> list[str]:
    handler = getattr(request.match_info.route, "handler", None)
    if handler is files.download:
        key = request.match_info.get("key", "")
        tag = f"file:{key}"
        return ["file", tag] if TAG.match(tag) else ["file"]
    if handler is graphiql._serve_asset:
        return ["static", "static:graphiql"]
    return []


@web.middleware
def cdn_tags(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    # A plain function for other methods: no coroutine of ours around every
    # POST, whose execution would resume it at each of its awaits.
    if request.method not in ("GET", "HEAD"):
        return handler(request)
    return _tagged(request, handler)


async def _tagged(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.status in (200, 304) and "Cache-Tag" not in response.headers:
        tags = tags_for(request)
        if tags:
            response.headers["Cache-Tag"] = ",".join(tags)
            response.headers["Surrogate-Key"] = " ".join(tags)
    return response


def middleware(config: Any) -> list[Any]:
    return [cdn_tags] if config.cdn_headers else []
