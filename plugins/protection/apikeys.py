"""API keys: generated with 256 bits, shown once, stored hashed with a visible prefix; scopes, expiry, revocation.

A key reads ``pbk_<prefix>_<secret>``: ``pbk_<prefix>`` (8 hex digits) is
stored and shown in listings so people can tell keys apart; the whole key is
stored only as its SHA-256 (a 256-bit random secret needs no slow hash:
nothing to brute-force). Keys live in the records store
(``protection_api_keys``), which every instance shares, and each request
reads its key's row, so a revocation through one instance is refused by all
at once. ``last_used_at`` is written at most once a minute per key and
instance.

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

TABLE = "protection_api_keys"
PREFIX = "pbk_"
_KEY = re.compile(r"^pbk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
#: The scopes every deployment knows; plugins may use others (``jobs:admin``).
BASE_SCOPES = ("read", "write", "admin")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]*(:[a-z0-9_-]+)?$")
#: ``last_used_at`` is refreshed at most this often per key and instance.
TOUCH_EVERY = 60.0


def define_tables(metadata: sa.MetaData) -> None:
    ts = sa.DateTime(timezone=True)
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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; they were stored as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate() -> tuple[str, str]:
    """A new key and its visible prefix: ``(pbk_1a2b3c4d_<43 chars>, pbk_1a2b3c4d)``."""
    prefix = PREFIX + secrets.token_hex(4)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


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

    @classmethod
    def from_row(cls, row: Any) -> "ApiKey":
        return cls(
            id=row.id,
            prefix=row.prefix,
            name=row.name,
            owner=row.owner,
            scopes=tuple(json.loads(row.scopes)),
            created_at=_aware(row.created_at),
            expires_at=_aware(row.expires_at),
            revoked_at=_aware(row.revoked_at),
            last_used_at=_aware(row.last_used_at),
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
        self._touched: dict[str, float] = {}

    async def create(
        self, *, name: str, owner: str | None = None, scopes: list[str] | None = None, expires_at: dt.datetime | None = None
    ) -> tuple[ApiKey, str]:
        """A new key: the record and the secret (shown once, never stored)."""
        if not name or len(name) > 200:
            raise GraphQLError("a key needs a name of 1 to 200 characters", "BAD_USER_INPUT")
        checked = check_scopes(list(scopes if scopes is not None else ["read"]))
        expires_at = _aware(expires_at)
        if expires_at is not None and expires_at <= _now():
            raise GraphQLError("expiresAt is in the past", "BAD_USER_INPUT")
        secret, prefix = generate()
        key = ApiKey(id=uuid.uuid4().hex, prefix=prefix, name=name, owner=owner, scopes=checked, created_at=_now(), expires_at=expires_at)
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
        return key, secret

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        query = sa.select(self.table).order_by(self.table.c.created_at)
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
            row = (await conn.execute(sa.select(self.table).where(self.table.c.hash == hash_key(secret)))).first()
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
