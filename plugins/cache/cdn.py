"""CDN purges: Cloudflare by tag (and URL prefix), CloudFront invalidations through aiobotocore.

Invalidated tags are handed to :meth:`Purger.submit`, which never waits: a
background task gathers them for ``cache.cdn.batch_window`` seconds, sends
one purge per batch (Cloudflare: at most 30 tags or prefixes per call, as its
API allows), and retries refusals (429, 5xx) and timeouts with exponential
backoff, ``cache.cdn.retries`` times. A purge that still fails is logged and
dropped: the mutation that caused it has long returned.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import uuid
from typing import Any, Iterable

import aiohttp

from plugboard.cancelling import cancel_until_done
from plugboard.plugins.cache.config import CacheConfig

logger = logging.getLogger("plugboard.cache.cdn")

#: Cloudflare's limit of tags (or prefixes) in one purge_cache call.
CLOUDFLARE_BATCH = 30


class PurgeFailed(Exception):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Purger(abc.ABC):
    """Batches tags and sends them with retries; subclasses send one batch."""

    name = "cdn"

    def __init__(self, config: CacheConfig) -> None:
        self.options = config.cdn
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._busy = False
        #: Counters: purges sent, failed attempts, batches given up.
        self.sent = 0
        self.failures = 0
        self.dropped = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"cdn-purge-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_until_done([self._task])

    def submit(self, tags: Iterable[str]) -> None:
        for tag in tags:
            self._pending[tag] = None
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every submitted tag has been sent or given up (tests, shutdown)."""
        while self._pending or self._wake.is_set() or self._busy:
            await asyncio.sleep(0.02)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._busy = True
            try:
                if self.options.batch_window:
                    await asyncio.sleep(self.options.batch_window)
                self._wake.clear()
                tags, self._pending = list(self._pending), {}
                if tags:
                    await self._send_with_retries(tags)
            finally:
                self._busy = False

    async def _send_with_retries(self, tags: list[str]) -> None:
        delay = self.options.backoff
        for attempt in range(self.options.retries + 1):
            try:
                async with asyncio.timeout(self.options.timeout):
                    await self.send(tags)
                self.sent += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a CDN fault must never reach a request
                self.failures += 1
                retry = getattr(e, "retry", True)
                reason = "timed out" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
                if not retry or attempt == self.options.retries:
                    self.dropped += 1
                    logger.error("cdn: %s purge of %d tags failed, giving up: %s", self.name, len(tags), reason)
                    return
                logger.warning("cdn: %s purge failed (%s); retrying in %.1fs", self.name, reason, delay)
                await asyncio.sleep(delay)
                delay *= 2

    @abc.abstractmethod
    async def send(self, tags: list[str]) -> None:
        """Purge ``tags`` at the CDN once; raise :class:`PurgeFailed` to be retried."""


class CloudflarePurger(Purger):
    """``POST /zones/{zone_id}/purge_cache`` with ``{"tags": [...]}`` (then ``{"prefixes": [...]}``)."""

    name = "cloudflare"

    def __init__(self, config: CacheConfig) -> None:
        super().__init__(config)
        self.cf = config.cloudflare
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()

    async def send(self, tags: list[str]) -> None:
        for start in range(0, len(tags), CLOUDFLARE_BATCH):
            await self._post({"tags": tags[start : start + CLOUDFLARE_BATCH]})
        prefixes = list(self.cf.prefixes)
        for start in range(0, len(prefixes), CLOUDFLARE_BATCH):
            await self._post({"prefixes": prefixes[start : start + CLOUDFLARE_BATCH]})

    async def _post(self, payload: dict[str, Any]) -> None:
        url = f"{self.cf.api_base.rstrip('/')}/zones/{self.cf.zone_id}/purge_cache"
        headers = {"Authorization": f"Bearer {self.cf.api_token}", "Content-Type": "application/json"}
        async with self._session.post(url, json=payload, headers=headers) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            if resp.status == 200 and isinstance(body, dict) and body.get("success"):
                return
            errors = body.get("errors") if isinstance(body, dict) else None
            retry = resp.status == 429 or resp.status >= 500
            raise PurgeFailed(f"HTTP {resp.status}: {errors or (await resp.text())[:200]}", retry=retry)


class CloudFrontPurger(Purger):
    """``CreateInvalidation`` of the configured paths (CloudFront invalidates paths, not tags)."""

    name = "cloudfront"

    def __init__(self, config: CacheConfig) -> None:
        super().__init__(config)
        self.aws = config.aws
        self._session: Any = None

    async def start(self) -> None:
        from aiobotocore.session import get_session

        self._session = get_session()
        await super().start()

    async def send(self, tags: list[str]) -> None:
        import botocore.exceptions

        kwargs: dict[str, Any] = {"region_name": self.aws.region}
        if self.aws.endpoint_url:
            kwargs["endpoint_url"] = self.aws.endpoint_url
        if self.aws.access_key_id:
            kwargs["aws_access_key_id"] = self.aws.access_key_id
            kwargs["aws_secret_access_key"] = self.aws.secret_access_key
        paths = list(self.aws.paths)
        async with self._session.create_client("cloudfront", **kwargs) as client:
            try:
                await client.create_invalidation(
                    DistributionId=self.aws.distribution_id,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(paths), "Items": paths},
                        # Unique per batch: CloudFront treats a repeated reference as the same request.
                        "CallerReference": f"plugboard-{time.time_ns()}-{uuid.uuid4().hex[:8]}",
                    },
                )
            except botocore.exceptions.ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                raise PurgeFailed(f"{code}: {e}", retry=status == 429 or status >= 500 or code == "Throttling") from e


def make_purger(config: CacheConfig) -> Purger | None:
    if config.cdn_integration == "cloudflare":
        return CloudflarePurger(config)
    if config.cdn_integration == "aws":
        return CloudFrontPurger(config)
    return None
