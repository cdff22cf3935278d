"""The operators' inspect endpoint: loaded plugins, versions, hooks, owned fields.

Off by default (``server.inspect``); when on, it answers only to
``Authorization: Bearer <server.admin_token>``. Without a token configured it
refuses everyone rather than exposing the plugin list.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from plugboard import __version__, keys


def describe(app: web.Application) -> dict:
    """What each plugin contributes; shared with ``plugboard check``."""
    pm = app[keys.PLUGIN_MANAGER]
    contributions = app[keys.CONTRIBUTIONS]
    plugins = []
    for name, loaded in pm.loaded.items():
        hooks = sorted(impl_name for impl_name in _hook_names(pm, loaded.plugin))
        plugins.append(
            {
                "name": name,
                "version": loaded.version,
                "origin": loaded.origin,
                "hooks": hooks,
                "contributes": contributions.get(name, {}),
            }
        )
    return {"plugboard": __version__, "plugins": plugins}


def _hook_names(pm, plugin) -> list[str]:
    return [caller.name for caller in pm.get_hookcallers(plugin) or []]


async def inspect_endpoint(request: web.Request) -> web.Response:
    token = request.app[keys.CORE_CONFIG].server.admin_token
    sent = request.headers.get("Authorization", "")
    if not token:
        return web.json_response({"error": "the inspect endpoint needs server.admin_token to be set"}, status=403)
    if not sent.startswith("Bearer ") or not hmac.compare_digest(sent[7:].encode(), token.encode()):
        return web.json_response({"error": "admin token required"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    return web.json_response(describe(request.app))
