"""The providers the built-in job types use: file storage and the mailer, per app.

Made on first use rather than at start-up, because a job type is only a task
function (``plugboard_tasks`` gives no lifespan of its own): the instance is
created through the app's provider registry, which also closes it at
shutdown. One :class:`Services` belongs to one ``builtin_tasks()`` call, that
is to one app; nothing is kept at module level.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from plugboard import keys
from plugboard.errors import ConfigError
from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.tasks import PermanentError

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.plugins.jobs.builtin.mailers import Mailer
    from plugboard.providers.storage import Storage

OWNER = "jobs"


class Services:
    """Lazily created providers for one app: ``await services.storage(app)``."""

    def __init__(self, settings: BuiltinConfig) -> None:
        self.settings = settings
        self._instances: dict[tuple[int, str], Any] = {}
        self._lock: asyncio.Lock | None = None

    async def storage(self, app: "web.Application") -> "Storage":
        files = self.settings.files
        return await self._get(app, "storage", files.storage, files.options, "jobs.files.options")

    async def mailer(self, app: "web.Application") -> "Mailer":
        email = self.settings.email
        typed = {"smtp": email.smtp, "outbox": email.outbox}.get(email.mailer)
        return await self._get(app, "mailer", email.mailer, email.options, "jobs.email.options", typed=typed)

    async def _get(self, app: "web.Application", kind: str, name: str, options: dict, section: str, *, typed: Any = None) -> Any:
        key = (id(app), kind)
        if key in self._instances:
            return self._instances[key]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if key not in self._instances:
                self._instances[key] = await self._create(app, kind, name, options, section, typed)
        return self._instances[key]

    async def _create(self, app: "web.Application", kind: str, name: str, options: dict, section: str, typed: Any) -> Any:
        registry = app[keys.PROVIDERS]
        try:
            if typed is not None and registry.spec(kind, name).config is type(typed):
                config = typed
            else:
                config = registry.validate(kind, name, options, section=section, source_of=app[keys.SETTINGS].source)
        except ConfigError as e:
            raise PermanentError(str(e)) from e
        return await registry.create(kind, name, config, app=app, owner=OWNER)

