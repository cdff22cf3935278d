"""The protection plugin's ``AppKey``s for objects made at start-up."""

from __future__ import annotations

from aiohttp import web

from plugboard.plugins.protection.apikeys import ApiKeys
from plugboard.plugins.protection.jwtauth import JWTVerifier

API_KEYS: web.AppKey[ApiKeys] = web.AppKey("plugboard.protection.api_keys", ApiKeys)
JWT: web.AppKey[JWTVerifier] = web.AppKey("plugboard.protection.jwt", JWTVerifier)
