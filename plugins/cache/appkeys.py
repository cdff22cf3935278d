"""The cache plugin's app keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from plugboard.plugins.cache.policy import Hints
    from plugboard.plugins.cache.runtime import CacheRuntime

#: The running cache (store, hints, invalidation), from the plugin's lifespan on.
RUNTIME: web.AppKey["CacheRuntime"] = web.AppKey("plugboard.cache.runtime")
#: ``@cacheControl`` hints read from the composed SDL at start-up.
HINTS: web.AppKey["Hints"] = web.AppKey("plugboard.cache.hints")
