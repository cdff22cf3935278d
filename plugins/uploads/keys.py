"""The AppKey under which the uploads plugin keeps its service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from plugboard.plugins.uploads.service import UploadService

UPLOADS: web.AppKey["UploadService"] = web.AppKey("plugboard.uploads")
