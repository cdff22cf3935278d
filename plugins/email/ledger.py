"""The message ledger: one entry per idempotency key, the state machine that sends a message at most once.

``queued`` (reserved by a send) -> ``sending`` (claimed by the attempt that
calls the provider) -> ``sent`` | ``failed`` | ``retry`` (a temporary error:
the next attempt may claim it again).

``sending`` is a lease (``email.send_lease``): the attempt holding it must
finish within that time (the send-email task cuts the mailer off at the
lease). A claim finding ``sending`` within the lease is a duplicate delivery
of a job still in flight: it does not send (the caller retries later, and
then finds ``sent``). A claim finding ``sending`` past the lease means the
attempt died (its worker was killed) before recording an outcome: the claim
takes the lease over and sends. If that worker died after the provider had
accepted the message, this second copy carries the same Message-ID (most
mailbox providers show one); ``send_lease: 0`` never takes a lease over
(strictly at most once: such a message fails, for an operator to look at).

Two implementations: :class:`SqlLedger` (the ``email_messages`` table of the
records store; the embedded default) and :class:`RedisLedger` (hashes with a
retention TTL; ``email.ledger: redis``, or ``auto`` with ``redis.url`` set),
which keeps the four ledger round trips of a message off the SQL database.
Both also count messages per recipient (the per-recipient cap) and map a
Message-ID back to its template (webhook events).
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from plugboard import keys
from plugboard.plugins.email import store

#: Called inside the reservation (with the SQL connection, or None): raises to refuse the send.
Check = Callable[[Any], Awaitable[None]]


@attrs.define(frozen=True, kw_only=True)
class Entry:
    key: str
    address: str
    template: str
    status: str
    message_id: str | None = None
    error: str | None = None


class Ledger(Protocol):
    async def reserve(self, key: str, address: str, template: str, check: Check) -> Entry | None:
        """Run ``check``, then create the ``queued`` entry; an existing key returns its entry instead."""

    async def recent(self, conn: Any, address: str, since: float) -> int:
        """Messages reserved for ``address`` since ``since`` (Unix seconds)."""

    async def claim(self, key: str, lease: float) -> Entry | None:
        """None: the caller may send now (the entry is ``sending`` for ``lease`` seconds). Else the
        entry as it stands (``sending`` only while another attempt's lease runs, or with ``lease`` 0)."""

    async def finish(self, key: str, status: str, *, message_id: str | None = None, error: str | None = None) -> Entry | None:
        """Record the outcome; returns the entry (None when the key is unknown)."""

    async def set_status(self, key: str, status: str) -> None: ...

    async def get(self, key: str) -> Entry | None: ...

    async def template_of(self, message_id: str) -> str | None: ...


class SqlLedger:
    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def _table(self) -> sa.Table:
        return store.table(self.app, "messages")

    def _records(self) -> Any:
        return self.app[keys.RECORDS]

    @staticmethod
    def _entry(row: Any) -> Entry:
        return Entry(key=row.key, address=row.address, template=row.template, status=row.status, message_id=row.message_id, error=row.error)

    async def reserve(self, key: str, address: str, template: str, check: Check) -> Entry | None:
        table = self._table
        now = time.time()
        try:
            # The recipient checks and the insert in one transaction: one round trip less.
            async with self._records().begin() as conn:
                await check(conn)
                await conn.execute(sa.insert(table).values(key=key, address=address, template=template, status="queued", created_at=now, updated_at=now))
            return None
        except IntegrityError:
            async with self._records().connect() as conn:
                return self._entry((await conn.execute(sa.select(table).where(table.c.key == key))).first())

    async def recent(self, conn: Any, address: str, since: float) -> int:
        table = self._table
        query = sa.select(sa.func.count()).select_from(table).where(table.c.address == address, table.c.created_at >= since)
        if conn is None:
            async with self._records().connect() as conn:
                return (await conn.execute(query)).scalar_one()
        return (await conn.execute(query)).scalar_one()

    async def claim(self, key: str, lease: float) -> Entry | None:
        table = self._table
        now = time.time()
        claimable = table.c.status.in_(("queued", "retry"))
        if lease > 0:
            # updated_at of a `sending` entry is when its lease began.
            claimable = sa.or_(claimable, sa.and_(table.c.status == "sending", table.c.updated_at < now - lease))
        async with self._records().begin() as conn:
            result = await conn.execute(sa.update(table).where(table.c.key == key, claimable).values(status="sending", updated_at=now))
            if result.rowcount == 1:
                return None
            row = (await conn.execute(sa.select(table).where(table.c.key == key))).first()
            if row is None:
                # A send-email job enqueued with a key outside this plugin.
                await conn.execute(sa.insert(table).values(key=key, address="", template="", status="sending", created_at=now, updated_at=now))
                return None
        return self._entry(row)

    async def finish(self, key: str, status: str, *, message_id: str | None = None, error: str | None = None) -> Entry | None:
        table = self._table
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": time.time()}
        if message_id is not None:
            values["message_id"] = message_id
        async with self._records().begin() as conn:
            await conn.execute(sa.update(table).where(table.c.key == key).values(**values))
            row = (await conn.execute(sa.select(table).where(table.c.key == key))).first()
        return self._entry(row) if row is not None else None

    async def get(self, key: str) -> Entry | None:
        async with self._records().connect() as conn:
            row = (await conn.execute(sa.select(self._table).where(self._table.c.key == key))).first()
        return self._entry(row) if row is not None else None

    async def set_status(self, key: str, status: str) -> None:
        async with self._records().begin() as conn:
            await conn.execute(sa.update(self._table).where(self._table.c.key == key).values(status=status, updated_at=time.time()))

    async def template_of(self, message_id: str) -> str | None:
        table = self._table
        wanted = message_id if message_id.startswith("<") else f"<{message_id}>"
        async with self._records().connect() as conn:
            row = (await conn.execute(sa.select(table.c.template).where(table.c.message_id.in_((wanted, message_id))))).first()
        return row.template if row else None


_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'address', ARGV[1], 'template', ARGV[2], 'status', 'queued')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return false
"""
# The lease runs on Redis's clock (TIME), so workers' clocks need not agree.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[2])
local s = redis.call('HGET', KEYS[1], 'status')
if not s then
  redis.call('HSET', KEYS[1], 'address', '', 'template', '', 'status', 'sending', 'claimed_at', now)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  return false
end
if s == 'queued' or s == 'retry'
   or (s == 'sending' and lease > 0 and now - tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0') > lease) then
  redis.call('HSET', KEYS[1], 'status', 'sending', 'claimed_at', now)
  return false
end
return redis.call('HGETALL', KEYS[1])
"""
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'error', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'message_id', ARGV[4])
  redis.call('SET', KEYS[2], redis.call('HGET', KEYS[1], 'template'), 'EX', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisLedger:
    def __init__(self, client: Any, *, retention: float, window: float, prefix: str = "plugboard:email") -> None:
        self.client = client
        self.retention = int(retention)
        self.window = int(window) + 1
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:msg:{key}"

    def _entry(self, key: str, flat: Any) -> Entry:
        data = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Entry(key=key, address=data.get("address", ""), template=data.get("template", ""), status=data.get("status", ""),
                     message_id=data.get("message_id") or None, error=data.get("error") or None)

    async def reserve(self, key: str, address: str, template: str, check: Check) -> Entry | None:
        await check(None)
        now = time.time()
        found = await self._reserve(
            keys=[self._key(key), f"{self.prefix}:rate:{address}"],
            args=[address, template, self.retention, now, key, now - self.window, self.window],
        )
        return self._entry(key, found) if found else None

    async def recent(self, conn: Any, address: str, since: float) -> int:
        return int(await self.client.zcount(f"{self.prefix}:rate:{address}", since, "+inf"))

    async def claim(self, key: str, lease: float) -> Entry | None:
        found = await self._claim(keys=[self._key(key)], args=[self.retention, repr(float(lease))])
        return self._entry(key, found) if found else None

    async def finish(self, key: str, status: str, *, message_id: str | None = None, error: str | None = None) -> Entry | None:
        found = await self._finish(
            keys=[self._key(key), f"{self.prefix}:mid:{message_id or ''}"],
            args=[self.retention, status, error or "", message_id or ""],
        )
        return self._entry(key, found) if found else None

    async def get(self, key: str) -> Entry | None:
        flat = await self.client.hgetall(self._key(key))
        return self._entry(key, [x for kv in flat.items() for x in kv]) if flat else None

    async def set_status(self, key: str, status: str) -> None:
        await self.client.hset(self._key(key), "status", status)

    async def template_of(self, message_id: str) -> str | None:
        wanted = message_id if message_id.startswith("<") else f"<{message_id}>"
        for candidate in (wanted, message_id):
            value = await self.client.get(f"{self.prefix}:mid:{candidate}")
            if value:
                return _s(value)
        return None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
