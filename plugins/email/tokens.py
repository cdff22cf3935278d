"""Signed tokens: per-recipient-per-list unsubscribe tokens and tracking links.

``payload.signature``, both base64url; the HMAC-SHA256 key is derived from
``email.secret`` (else ``server.secret_key``) for this one purpose, so a token
made for one use never verifies as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _key(self, purpose: str) -> bytes:
        return hmac.new(self._secret, f"plugboard.email.{purpose}".encode(), hashlib.sha256).digest()

    def sign(self, purpose: str, data: dict[str, Any]) -> str:
        payload = _b64(json.dumps({**data, "iat": int(time.time())}, separators=(",", ":"), sort_keys=True).encode())
        signature = _b64(hmac.new(self._key(purpose), payload.encode(), hashlib.sha256).digest()[:20])
        return f"{payload}.{signature}"

    def verify(self, purpose: str, token: str, *, max_age: float = 0) -> dict[str, Any] | None:
        """The signed data, or None for a forged, altered, malformed or expired token."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
            return None
        payload, signature = token.split(".")
        expected = _b64(hmac.new(self._key(purpose), payload.encode(), hashlib.sha256).digest()[:20])
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if max_age and time.time() - data.get("iat", 0) > max_age:
            return None
        return data
