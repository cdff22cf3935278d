"""API keys: generated with 256 bits, shown once, stored hashed with a visible prefix; scopes, expiry, revocation.

A key reads ``pbk_<prefix>_<secret>``: ``pbk_<prefix>`` (8 hex digits) is
stored and shown in listings so people can tell keys apart; the whole key is
stored only as its SHA-256 (a 256-bit random secret needs no slow hash:
nothing to brute-force). Keys live in the records store
(``protection_api_keys``), which every instance shares, and each request
reads its key's row, so a revocation through one instance is refused by all
at once. ``last_used_at`` is written at most once a minute per key and
instance.

A key may carry its own request limit and cost budget, replacing
``protection.requests.per_key`` and ``protection.budget.max`` for it. They
live in a table of their own (``protection_api_key_limits``, one row per key
that has any), so deployments whose key table predates them need no
migration; a change, like a revocation, applies to the next request on
every instance.

Clients send a key as ``X-API-Key: <key>`` or ``Authorization: Bearer
<key>`` (the ``pbk_`` prefix tells it from a JWT or the admin token), or as
``apiKey`` in a WebSocket ``connection_init``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import time
import uuid
from typing import Any, Mapping

import attrs
import sqlalchemy as sa

from plugboard.graphql.errors import GraphQLError
from plugboard.providers.records import UTCDateTime, utc

TABLE = "protection_api_keys"
LIMITS_TABLE = "protection_api_key_limits"
PREFIX = "pbk_"
_KEY = re.compile(r"^pbk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
#: The scopes every deployment knows; plugins may use others (``jobs:admin``).
BASE_SCOPES = ("read", "write", "admin")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]*(:[a-z0-9_-]+)?$")
#: ``last_used_at`` is refreshed at most this often per key and instance.
TOUCH_EVERY = 60.0


def define_tables(metadata: sa.MetaData) -> None:
    ts = UTCDateTime()
    sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=True),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("last_used_at", ts, nullable=True),
    )
    sa.Table(
        LIMITS_TABLE,
        metadata,
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("rate_limit_max", sa.BigInteger, nullable=True),
        sa.Column("rate_limit_window_ms", sa.BigInteger, nullable=True),
        sa.Column("cost_budget", sa.BigInteger, nullable=True),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate() -> tuple[str, str]:
    """A new key and its visible prefix: ``(pbk_1a2b3c4d_<43 chars>, pbk_1a2b3c4d)``."""
    prefix = PREFIX + secrets.token_hex(4)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


@attrs.frozen
class KeyLimits:
    """A key's own limits; None fields fall back on the deployment's settings."""

    #: Requests per window (``protection.requests.per_key.max`` otherwise).
    rate_limit_max: int | None = None
    #: That window, in ms (``per_key``'s window otherwise).
    rate_limit_window_ms: int | None = None
    #: Cost units per budget window (``protection.budget.max`` otherwise).
    cost_budget: int | None = None

    @classmethod
    def from_input(cls, rate_limit: Mapping[str, Any] | None, cost_budget: Any) -> "KeyLimits":
        """From GraphQL's ``rateLimit: {max, windowMs}`` and ``costBudget``; BAD_USER_INPUT unless positive."""
        rate_limit = rate_limit or {}
        limits = cls(rate_limit.get("max"), rate_limit.get("windowMs"), cost_budget)
        named = {"rateLimit.max": limits.rate_limit_max, "rateLimit.windowMs": limits.rate_limit_window_ms, "costBudget": limits.cost_budget}
        for name, value in named.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise GraphQLError(f"{name} must be a positive integer, not {value!r}", "BAD_USER_INPUT")
        return limits

    def __bool__(self) -> bool:
        return self.rate_limit_max is not None or self.rate_limit_window_ms is not None or self.cost_budget is not None

    def as_graphql(self) -> dict[str, Any]:
        rate = None if self.rate_limit_max is None else {"max": self.rate_limit_max, "windowMs": self.rate_limit_window_ms}
        return {"rateLimit": rate, "costBudget": self.cost_budget}


NO_LIMITS = KeyLimits()


@attrs.frozen
class ApiKey:
    id: str
    prefix: str
    name: str
    owner: str | None
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    limits: KeyLimits = NO_LIMITS

    @classmethod
    def from_row(cls, row: Any) -> "ApiKey":
        limits = KeyLimits(row.rate_limit_max, row.rate_limit_window_ms, row.cost_budget)
        return cls(
            id=row.id,
            prefix=row.prefix,
            name=row.name,
            owner=row.owner,
            scopes=tuple(json.loads(row.scopes)),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            limits=limits if limits else NO_LIMITS,
        )

    def as_graphql(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "owner": self.owner,
            "scopes": list(self.scopes),
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
            "lastUsedAt": self.last_used_at,
            **self.limits.as_graphql(),
        }


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    bad = [s for s in scopes if not isinstance(s, str) or not _SCOPE.match(s)]
    if bad:
        raise GraphQLError(f"not a scope: {bad[0]!r} (e.g. read, write, admin, jobs:admin)", "BAD_USER_INPUT")
    return tuple(dict.fromkeys(scopes))


class ApiKeys:
    """Create, list, revoke and authenticate keys in the records store."""

    def __init__(self, records: Any, metadata: sa.MetaData) -> None:
        self.records = records
        self.table = metadata.tables[TABLE]
        self.limits_table = metadata.tables[LIMITS_TABLE]
        self._touched: dict[str, float] = {}

    def _select(self) -> Any:
        # Every read takes the key's limits with it: one query per request.
        t, lim = self.table, self.limits_table
        return sa.select(t, lim.c.rate_limit_max, lim.c.rate_limit_window_ms, lim.c.cost_budget).select_from(
            t.outerjoin(lim, lim.c.key_id == t.c.id)
        )

    async def _write_limits(self, conn: Any, key_id: str, limits: KeyLimits) -> None:
        lim = self.limits_table
        await conn.execute(lim.delete().where(lim.c.key_id == key_id))
        if limits:
            await conn.execute(lim.insert().values(key_id=key_id, **attrs.asdict(limits)))

    async def create(
        self,
        *,
        name: str,
        owner: str | None = None,
        scopes: list[str] | None = None,
        expires_at: dt.datetime | None = None,
        limits: KeyLimits = NO_LIMITS,
    ) -> tuple[ApiKey, str]:
        """A new key: the record and the secret (shown once, never stored)."""
        if not name or len(name) > 200:
            raise GraphQLError("a key needs a name of 1 to 200 characters", "BAD_USER_INPUT")
        checked = check_scopes(list(scopes if scopes is not None else ["read"]))
        expires_at = utc(expires_at)
        if expires_at is not None and expires_at <= _now():
            raise GraphQLError("expiresAt is in the past", "BAD_USER_INPUT")
        secret, prefix = generate()
        key = ApiKey(
            id=uuid.uuid4().hex, prefix=prefix, name=name, owner=owner, scopes=checked, created_at=_now(), expires_at=expires_at, limits=limits
        )
        async with self.records.begin() as conn:
            await conn.execute(
                self.table.insert().values(
                    id=key.id,
                    prefix=prefix,
                    hash=hash_key(secret),
                    name=name,
                    owner=owner,
                    scopes=json.dumps(list(checked)),
                    created_at=key.created_at,
                    expires_at=expires_at,
                )
            )
            if limits:
                await self._write_limits(conn, key.id, limits)
        return key, secret

    async def set_limits(self, key_id: str, limits: KeyLimits) -> ApiKey | None:
        """Replace a key's own limits (``NO_LIMITS``: the deployment's again); the key, or None when unknown."""
        async with self.records.begin() as conn:
            exists = (await conn.execute(sa.select(self.table.c.id).where(self.table.c.id == key_id))).first()
            if exists is None:
                return None
            await self._write_limits(conn, key_id, limits)
            row = (await conn.execute(self._select().where(self.table.c.id == key_id))).first()
        return ApiKey.from_row(row)

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        query = self._select().order_by(self.table.c.created_at)
        if owner is not None:
            query = query.where(self.table.c.owner == owner)
        async with self.records.connect() as conn:
            return [ApiKey.from_row(r) for r in (await conn.execute(query)).all()]

    async def revoke(self, key_id: str, *, owner: str | None = None) -> bool:
        """True when the key existed (and, with ``owner``, belongs to that owner) and was not yet revoked."""
        where = [self.table.c.id == key_id, self.table.c.revoked_at.is_(None)]
        if owner is not None:
            where.append(self.table.c.owner == owner)
        async with self.records.begin() as conn:
            result = await conn.execute(self.table.update().where(*where).values(revoked_at=_now()))
        return result.rowcount == 1

    async def authenticate(self, secret: str) -> ApiKey:
        """The key's record; GraphQLError UNAUTHENTICATED for a malformed, unknown, revoked or expired key."""
        if not _KEY.match(secret):
            raise GraphQLError("malformed API key", "UNAUTHENTICATED")
        async with self.records.connect() as conn:
            row = (await conn.execute(self._select().where(self.table.c.hash == hash_key(secret)))).first()
        if row is None:
            raise GraphQLError("unknown API key", "UNAUTHENTICATED")
        key = ApiKey.from_row(row)
        if key.revoked_at is not None:
            raise GraphQLError("this API key was revoked", "UNAUTHENTICATED")
        if key.expires_at is not None and key.expires_at <= _now():
            raise GraphQLError("this API key has expired", "UNAUTHENTICATED")
        await self._touch(key.id)
        return key

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[key_id] = now
        async with self.records.begin() as conn:
            await conn.execute(self.table.update().where(self.table.c.id == key_id).values(last_used_at=_now()))


def presented_key(headers: Mapping[str, str], connection_params: Mapping[str, Any] | None) -> str | None:
    """The API key a request carries, if any (``X-API-Key``, a ``pbk_`` bearer, or ``apiKey`` in connection_init)."""
    if connection_params:
        value = connection_params.get("apiKey") or connection_params.get("x-api-key")
        if isinstance(value, str):
            return value.strip()
        auth = connection_params.get("authorization") or connection_params.get("Authorization")
        if isinstance(auth, str) and auth.startswith("Bearer " + PREFIX):
            return auth[7:].strip()
    value = headers.get("X-API-Key")
    if value is not None:
        return value.strip()
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer " + PREFIX):
        return auth[7:].strip()
    return None
