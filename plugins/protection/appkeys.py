"""The protection plugin's ``AppKey``s for objects made at start-up."""

from __future__ import annotations

from aiohttp import web

from plugboard.plugins.protection.apikeys import ApiKeys

API_KEYS: web.AppKey[ApiKeys] = web.AppKey("plugboard.protection.api_keys", ApiKeys)
