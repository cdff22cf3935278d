"""The email plugin's app keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from plugboard.plugins.email.service import EmailService

#: The email service (send, templates, suppression, events), set in plugboard_configure.
EMAIL: web.AppKey["EmailService"] = web.AppKey("plugboard.email")
