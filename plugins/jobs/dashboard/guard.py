"""What protects the dashboard's login: wrong tokens throttled per address, sessions revocable.

This module owns :class:`LoginThrottle` (wrong admin tokens per client
address, with exponential backoff), :class:`RevokedSessions` (sessions a
logout ended, until they would have expired anyway), :class:`LoginGuard`
(both, one per dashboard, i.e. per app) and the two request facts they
depend on behind a proxy: the client's address and whether it used HTTPS
(believed from ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only when
``server.trust_proxy_headers`` is on).

Both count in the core's ``services.ratelimit`` store when the deployer
declared one, so they hold across instances; otherwise (the default: no
ratelimit provider ships yet) in this process's memory. A store that fails
is logged and the process's memory takes over, so neither a Redis outage
locks admins out nor does it open the door to guessing.

Rotating ``server.admin_token`` ends every session by itself: sessions are
signed with a key derived from the token (:mod:`.access`).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import attrs
from aiohttp import web

from plugboard import keys
from plugboard.errors import ProviderError

__all__ = [
    "FIRST_WAIT",
    "FREE_ATTEMPTS",
    "LoginGuard",
    "LoginThrottle",
    "MAX_WAIT",
    "RevokedSessions",
    "client_address",
    "is_https",
    "wait_after",
]

logger = logging.getLogger("plugboard.jobs.dashboard")

#: Wrong tokens from one address before any wait.
FREE_ATTEMPTS = 5
#: The wait after the first wrong token past the free ones; it doubles with each further one.
FIRST_WAIT = 1.0
#: The longest wait.
MAX_WAIT = 300.0
#: Wrong tokens are forgotten this long after the first one.
FORGET_AFTER = 3600.0
#: Addresses tracked in memory at most (the least recently failed are forgotten first).
MAX_ADDRESSES = 10_000

_PREFIX = "jobs-dashboard:"


def wait_after(failures: int) -> float:
    """Seconds an address waits after ``failures`` wrong tokens: 0 for the first few, then 1, 2, 4... up to :data:`MAX_WAIT`."""
    if failures < FREE_ATTEMPTS:
        return 0.0
    return min(FIRST_WAIT * 2 ** min(failures - FREE_ATTEMPTS, 32), MAX_WAIT)


def _trusts_proxy(request: web.Request) -> bool:
    return request.app[keys.CORE_CONFIG].server.trust_proxy_headers


def _last(header: str | None) -> str:
    # The last value is the one the proxy in front of us set; earlier ones
    # came from the client (or proxies before it) and may be forged.
    return header.rsplit(",", 1)[-1].strip() if header else ""


def client_address(request: web.Request) -> str:
    """Whom wrong tokens are counted against: the peer, or the proxy's ``X-Forwarded-For`` when trusted."""
    if _trusts_proxy(request):
        forwarded = _last(request.headers.get("X-Forwarded-For"))
        if forwarded:
            return forwarded
    return request.remote or "unknown"


def is_https(request: web.Request) -> bool:
    """Whether the client used HTTPS: this connection, or the proxy's ``X-Forwarded-Proto`` when trusted."""
    if request.secure:
        return True
    return _trusts_proxy(request) and _last(request.headers.get("X-Forwarded-Proto")).lower() == "https"


def ratelimit_store(app: web.Application) -> Any | None:
    """The app's ``services.ratelimit`` store, or None (not declared, or not started)."""
    services = app.get(keys.SERVICES)
    if services is None:
        return None
    names = services.names("ratelimit")
    if not names:
        return None
    try:
        return services.get("ratelimit", "default" if "default" in names else names[0])
    except LookupError:
        return None


@attrs.frozen
class Attempt:
    """Where an address stands: seconds to wait before it may try (0: now), wrong tokens so far."""

    wait: float
    failures: int


class _MemoryFailures:
    """Wrong tokens per address in this process."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        # address -> [failures, locked until, first failure]; least recently failed first.
        self._records: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def check(self, address: str) -> Attempt:
        record = self._records.get(address)
        if record is None:
            return Attempt(0.0, 0)
        now = self._clock()
        if now - record[2] >= FORGET_AFTER:
            del self._records[address]
            return Attempt(0.0, 0)
        return Attempt(max(0.0, record[1] - now), int(record[0]))

    def failed(self, address: str) -> float:
        now = self._clock()
        record = self._records.pop(address, None)
        if record is None or now - record[2] >= FORGET_AFTER:
            record = [0, now, now]
        record[0] += 1
        wait = wait_after(int(record[0]))
        record[1] = now + wait
        self._records[address] = record
        while len(self._records) > MAX_ADDRESSES:
            self._records.popitem(last=False)
        return wait

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)


class LoginThrottle:
    """Wrong admin tokens per client address, with exponential backoff (:func:`wait_after`).

    While an address waits, its attempts are refused unchecked, the right
    token included (otherwise guessing would go on, only with the answers
    withheld). A right token resets the count.

    :param clock: monotonic seconds for the memory counts (tests substitute their own).
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._memory = _MemoryFailures(clock)

    @staticmethod
    def _keys(address: str) -> tuple[str, str]:
        return f"{_PREFIX}login-failures:{address}", f"{_PREFIX}login-wait:{address}"

    async def check(self, app: web.Application, address: str) -> Attempt:
        store = ratelimit_store(app)
        if store is not None:
            failures_key, wait_key = self._keys(address)
            try:
                failures = await store.incr(failures_key, 0, expiry=FORGET_AFTER)
                wait = wait_after(failures)
                if not wait:
                    return Attempt(0.0, failures)
                state = await store.peek(wait_key, limit=1, window=wait)
                return Attempt(0.0 if state.allowed else state.reset_after, failures)
            except (ProviderError, OSError) as e:
                logger.warning("jobs dashboard: the ratelimit store failed (%s); login throttle in memory", e)
        return self._memory.check(address)

    async def failed(self, app: web.Application, address: str) -> float:
        """Count a wrong token; the seconds the address must now wait."""
        wait = self._memory.failed(address)
        store = ratelimit_store(app)
        if store is not None:
            failures_key, wait_key = self._keys(address)
            try:
                wait = wait_after(await store.incr(failures_key, 1, expiry=FORGET_AFTER))
                if wait:
                    # The wait starts now: a fresh window of one hit.
                    await store.reset(wait_key)
                    await store.hit(wait_key, limit=1, window=wait)
            except (ProviderError, OSError) as e:
                logger.warning("jobs dashboard: the ratelimit store failed (%s); login throttle in memory", e)
        return wait

    async def succeeded(self, app: web.Application, address: str) -> None:
        self._memory.succeeded(address)
        store = ratelimit_store(app)
        if store is not None:
            try:
                for key in self._keys(address):
                    await store.reset(key)
            except (ProviderError, OSError) as e:
                logger.warning("jobs dashboard: the ratelimit store failed (%s)", e)


class RevokedSessions:
    """Sessions ended by logout, remembered until they would have expired.

    In this process; also in the ratelimit store when one is declared (so a
    logout holds on every instance).
    """

    def __init__(self, max_age: float, clock: Any = time.time) -> None:
        #: The longest a session lives: how long the store remembers a revocation.
        self.max_age = max_age
        self._clock = clock
        # nonce -> when the session would have expired (wall clock, as its issue time).
        self._until: dict[str, float] = {}

    def _sweep(self) -> None:
        now = self._clock()
        for nonce in [n for n, until in self._until.items() if until <= now]:
            del self._until[nonce]

    async def revoke(self, app: web.Application, nonce: str, until: float) -> None:
        remaining = until - self._clock()
        if remaining <= 0:
            return
        if len(self._until) >= 1024:
            self._sweep()
        self._until[nonce] = until
        store = ratelimit_store(app)
        if store is not None:
            try:
                # One window for every hit and peek (a sliding window: a
                # shorter one at peek time could miss the hit).
                await store.hit(f"{_PREFIX}revoked:{nonce}", limit=1, window=self.max_age)
            except (ProviderError, OSError) as e:
                logger.warning("jobs dashboard: the ratelimit store failed (%s); logout holds on this instance only", e)

    async def is_revoked(self, app: web.Application, nonce: str) -> bool:
        if nonce in self._until:
            return True
        store = ratelimit_store(app)
        if store is None:
            return False
        try:
            state = await store.peek(f"{_PREFIX}revoked:{nonce}", limit=1, window=self.max_age)
        except (ProviderError, OSError) as e:
            logger.warning("jobs dashboard: the ratelimit store failed (%s); revoked sessions from this instance only", e)
            return False
        return not state.allowed

    def __len__(self) -> int:
        return len(self._until)


@attrs.define
class LoginGuard:
    """One dashboard's (one app's) login protections."""

    #: The longest a session lives (``access.SESSION_MAX_AGE``).
    session_max_age: float
    throttle: LoginThrottle = attrs.Factory(LoginThrottle)
    revoked: RevokedSessions = attrs.field(default=attrs.Factory(lambda self: RevokedSessions(self.session_max_age + 60), takes_self=True))
