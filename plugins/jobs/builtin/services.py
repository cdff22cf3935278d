"""The services the built-in job types use: the storage and the mailer their settings name.

Both are the core's named services (the ``services.storage`` and ``services.mailer`` settings),
started with the app; ``jobs.files.storage`` and ``jobs.email.mailer`` pick
which one. The names are checked at start-up (:func:`plugboard.plugins.jobs.runtime.check_config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugboard import keys
from plugboard.plugins.jobs.builtin.config import BuiltinConfig

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.providers.mailer import Mailer
    from plugboard.providers.storage import Storage


class Services:
    """The job types' view of the app's services: ``await services.storage(app)``."""

    def __init__(self, settings: BuiltinConfig) -> None:
        self.settings = settings

    async def storage(self, app: "web.Application") -> "Storage":
        return app[keys.SERVICES].get("storage", self.settings.files.storage)

    async def mailer(self, app: "web.Application") -> "Mailer":
        return app[keys.SERVICES].get("mailer", self.settings.email.mailer)
