"""Every ``web.AppKey`` the real-time plugin stores on the application.

One place for the plugin's per-app state, like :mod:`plugboard.keys` for the
core. Values are set in the plugin's lifespan; nothing is stored at import.

Importing this module binds it as the attribute ``keys`` of the package
``plugboard.plugins.realtime``, which is also the package ``__init__``'s
global namespace, where ``keys`` means :mod:`plugboard.keys`. So that
``keys.PROVIDERS`` / ``keys.PUBSUB`` there keep working whichever module is
bound last, this module re-exports the core's keys too (the same objects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from plugboard.keys import *  # noqa: F401,F403 - see the module docstring
from plugboard.keys import PROVIDERS, PUBSUB, REDIS  # noqa: F401 - named for readers and linters

if TYPE_CHECKING:
    from plugboard.plugins.realtime.presence import PresenceTracker

#: The running presence tracker (store + sweeper) while ``features.presence`` is on.
PRESENCE = web.AppKey("plugboard.realtime.presence", "PresenceTracker")
