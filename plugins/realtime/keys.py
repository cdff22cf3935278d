"""``web.AppKey``s of the real-time plugin's per-app state, like :mod:`plugboard.keys` for the core.

Values are set in the plugin's lifespan; nothing is stored at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web


if TYPE_CHECKING:
    from plugboard.plugins.realtime.presence import PresenceTracker

#: The running presence tracker (store + sweeper) while ``features.presence`` is on.
PRESENCE: web.AppKey[PresenceTracker] = web.AppKey("plugboard.realtime.presence")
