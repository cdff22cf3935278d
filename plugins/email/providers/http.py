"""The HTTP client the API mailers share: one aiohttp session per mailer, errors classified."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from plugboard.providers.mailer import MailerError
from plugboard.plugins.email.providers import _describe, classify_status


class HttpMailer:
    name = "http"

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        if self._session is None or self._session.closed:
            raise MailerError(f"the {self.name} mailer is not started", permanent=False)

    async def _post(self, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
        if self._session is None:
            raise MailerError(f"the {self.name} mailer is not started", permanent=False)
        try:
            async with self._session.post(url, **kwargs) as response:
                raw = await response.read()
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                if response.status >= 300:
                    permanent = classify_status(response.status)
                    raise MailerError(f"{self.name} answered {response.status}: {_describe(body)}", permanent=permanent)
                return response.status, body, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise MailerError(f"cannot reach {self.name}: {type(e).__name__}: {e}", permanent=False) from e
