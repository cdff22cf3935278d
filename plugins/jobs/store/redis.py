"""The ``redis`` job store: a hash per job and sorted-set indexes, on one Redis.

Keys (``P`` = ``jobs.queue``): ``P:job:<id>`` holds the fields, each a JSON
value except ``status``, ``type`` and ``id`` (plain strings, so the Lua
update can compare them) and ``attempts`` (an integer, for HINCRBY). The
indexes are sorted sets of ids with score 0, so members sort by id, which
is by creation time (UUIDv7): ``P:idx:all``, ``P:idx:status:<S>``,
``P:idx:type:<T>`` and ``P:idx:st:<S>:<T>``. A listing is one ``ZRANGE ...
BYLEX REV LIMIT`` on the index matching its filters; counts are ZCARDs.

Every change is one round trip: ``create`` is a MULTI/EXEC, ``update`` a Lua
script that checks the status condition, applies the changes, moves the job
between status indexes and returns the record. Sharing Redis with the
broker, ``create`` and ``update`` may also add the job's message to the
stream, or acknowledge entries, in the same script.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Mapping, Sequence

import attrs
import redis.asyncio
import redis.exceptions

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.providers.redis import reconnecting
from plugboard.providers.batching import Batcher
from plugboard.plugins.jobs.model import FINISHED, Job, JobStatus
from plugboard.plugins.jobs.store import JobPage, StoreOptions, check_changes

_RAW = frozenset({"id", "type", "status"})

# KEYS[1] = the job hash, KEYS[2] (optional) = a stream. ARGV = prefix,
# allowed statuses (",A,B," or ""), add_attempt ("1"/"0"), the number n of
# stream entries to acknowledge, the consumer group, n entry ids, then field,
# value, field, value ...
# Returns {applied (0/1), "field\0value\0..."} or nil for an unknown job.
# The entries are acknowledged (XACK, XDEL) after the update, whether it
# applied or not: a final state and its acknowledgement are one command.
_UPDATE = """
local channel = false
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
local nack = tonumber(ARGV[4])
if nack > 0 then
  local ids = {unpack(ARGV, 6, 5 + nack)}
  -- Acknowledged once the update below is done (Lua scripts run atomically).
  redis.call('XACK', KEYS[2], ARGV[5], unpack(ids))
  redis.call('XDEL', KEYS[2], unpack(ids))
end
if not status then return nil end
local applied = 1
if ARGV[2] ~= '' and not string.find(ARGV[2], ',' .. status .. ',', 1, true) then applied = 0 end
local first = 6 + nack
if applied == 1 then
  if ARGV[3] == '1' then redis.call('HINCRBY', key, 'attempts', 1) end
  local newstatus = status
  if #ARGV >= first then
    redis.call('HSET', key, unpack(ARGV, first))
    for i = first, #ARGV, 2 do
      if ARGV[i] == 'status' then newstatus = ARGV[i + 1] end
    end
  end
  if newstatus ~= status then
    local p = ARGV[1]
    local id = redis.call('HGET', key, 'id')
    local jtype = redis.call('HGET', key, 'type')
    redis.call('ZREM', p .. ':idx:status:' .. status, id)
    redis.call('ZADD', p .. ':idx:status:' .. newstatus, 0, id)
    redis.call('ZREM', p .. ':idx:st:' .. status .. ':' .. jtype, id)
    redis.call('ZADD', p .. ':idx:st:' .. newstatus .. ':' .. jtype, 0, id)
  end
end
-- then: send
-- The record as one JSON document rather than a multi-bulk reply of every
-- field: parsing thirty replies per update was most of a busy worker's
-- time, and building the document field by field in Python half the rest.
-- Every stored value is JSON but the raw strings, which are encoded here.
local flat = redis.call('HGETALL', key)
local parts = {}
for i = 1, #flat, 2 do
  local name, value = flat[i], flat[i + 1]
  if name == 'id' or name == 'type' or name == 'status' then value = cjson.encode(value) end
  parts[#parts + 1] = '"' .. name .. '":' .. value
end
local doc = '{' .. table.concat(parts, ',') .. '}'
if channel and applied == 1 then redis.call('PUBLISH', channel, doc) end
return {applied, doc}
"""

# _UPDATE with, as the last ARGV, a pubsub channel: when the update applies,
# the record's JSON (what the reply carries, and what ``Job.to_dict()``
# encodes to as an event) is published there, after the update and before
# the acknowledgement's effects are visible to anyone else.
_UPDATE_PUBLISH = _UPDATE.replace("local channel = false\n", "local channel = table.remove(ARGV)\n", 1)

# _UPDATE with, as the last ARGV, a broker message added to the stream
# KEYS[2] (fields ``data``, ``job``) when the update applies (no entries to
# acknowledge): retry() makes the job PENDING and queues it in one command.
_UPDATE_SEND = "local send = table.remove(ARGV)\n" + _UPDATE.replace(
    "-- then: send\n",
    "if applied == 1 then redis.call('XADD', KEYS[2], '*', 'data', send, 'job', redis.call('HGET', key, 'id')) end\n",
)

# KEYS[1] = the job hash, KEYS[2..5] = its indexes, KEYS[6] (optional) = the
# broker's stream. ARGV[1] = the id, ARGV[2] = the message ("" without a
# stream), ARGV[3] = a pubsub channel ("" for none) and ARGV[4] its event,
# then field, value, ...
# One command instead of MULTI, HSET, four ZADDs and EXEC: half the enqueue
# time; with the stream, the job's message is added after its record and
# its PENDING event (a worker's PROCESSING event cannot overtake it).
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
for i = 2, 5 do redis.call('ZADD', KEYS[i], 0, ARGV[1]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
if #KEYS > 5 then redis.call('XADD', KEYS[6], '*', 'data', ARGV[2], 'job', ARGV[1]) end
return 1
"""


@attrs.define(frozen=True)
class StreamMessage:
    """A broker message to add to a stream (fields ``data`` and ``job``) together with a new record."""

    stream: str
    data: bytes


@attrs.define(frozen=True)
class StreamAck:
    """Stream entries to acknowledge (XACK, then XDEL) together with a record update."""

    stream: str
    group: str
    entries: Sequence[bytes]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: ``json.dumps(value, separators=...)`` builds an encoder per call; one will do.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode_fields(values: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        if name in _RAW:
            out[name] = value.value if isinstance(value, JobStatus) else str(value)
        else:
            out[name] = _dumps(value)
    return out


def decode_fields(flat: list[Any] | dict[Any, Any]) -> Job:
    items = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2])
    # One JSON document from the stored JSON values: one json.loads per job.
    parts = []
    for k, v in items:
        name = _text(k)
        value = json.dumps(_text(v)) if name in _RAW else _text(v)
        parts.append(f'"{name}":{value}')
    return Job.from_dict(json.loads("{" + ",".join(parts) + "}"))


class RedisJobStore:
    """:class:`~plugboard.plugins.jobs.store.JobStore` on Redis.

    :param options: ``prefix`` (the ``jobs.queue`` setting) and ``redis_url``
        (the jobs plugin's own Redis; None: the app's shared client).
    :param app: the application (or a mapping) holding ``plugboard.keys.REDIS``.
    """

    def __init__(self, options: StoreOptions | None = None, app: Mapping[Any, Any] | None = None) -> None:
        self.options = options or StoreOptions()
        self._app = app
        self._client: redis.asyncio.Redis | None = None
        self._own = False
        self._update_sha = ""
        self._create_sha = ""
        self._update_send_sha = ""
        self._update_publish_sha = ""
        self.batcher: Batcher | None = None
        self._own_batcher = False
        p = self.options.prefix
        self._job = f"{p}:job:"
        self._idx = f"{p}:idx:"

    async def start(self) -> None:
        if self.options.redis_url:
            self._client = redis.asyncio.Redis.from_url(self.options.redis_url, retry=reconnecting())
            self._own = True
        else:
            self._client = self._app.get(keys.REDIS) if self._app is not None else None
            if self._client is None:
                raise ProviderError("jobs.store: redis needs jobs.redis or redis.url (or REDIS_URL)")
        await self.check()
        self._update_sha = await self._client.script_load(_UPDATE)
        self._create_sha = await self._client.script_load(_CREATE)
        self._update_send_sha = await self._client.script_load(_UPDATE_SEND)
        self._update_publish_sha = await self._client.script_load(_UPDATE_PUBLISH)
        shared = None if self._own or self._app is None else self._app.get(keys.REDIS_BATCHER)
        self._own_batcher = shared is None
        self.batcher = shared if shared is not None else Batcher(self._client)

    async def close(self) -> None:
        if self._own_batcher and self.batcher is not None:
            await self.batcher.aclose()
        if self._own and self._client is not None:
            await self._client.aclose()
        self._client = None

    async def check(self) -> None:
        try:
            await self.client.ping()
        except (redis.exceptions.RedisError, OSError) as e:
            raise ProviderError(f"jobs.store: redis does not answer: {e}") from e

    @property
    def client(self) -> redis.asyncio.Redis:
        assert self._client is not None, "start() first"
        return self._client

    def _indexes(self, job_id: str, status: str, type: str) -> list[str]:
        i = self._idx
        return [f"{i}all", f"{i}status:{status}", f"{i}type:{type}", f"{i}st:{status}:{type}"]

    async def create(self, job: Job, *, send: StreamMessage | None = None, publish: tuple[str, str] | None = None) -> None:
        """:meth:`JobStore.create <plugboard.plugins.jobs.store.JobStore.create>`, and in the same command:
        with ``publish`` (channel, message) a PUBLISH after the record, with ``send`` the broker's
        message for the job added to its stream after both."""
        keys = [self._job + job.id, *self._indexes(job.id, job.status.value, job.type)]
        argv: list[Any] = [job.id, b"", *(publish or ("", ""))]
        if send is not None:
            keys.append(send.stream)
            argv[1] = send.data
        for field in encode_fields(job.to_dict()).items():
            argv += field
        assert self.batcher is not None, "start() first"
        # Through the batcher, not the client: redis-py's command path (pool,
        # retry, per-call timeout task) was half of an enqueue's CPU.
        try:
            await self.batcher.call("EVALSHA", self._create_sha, len(keys), *keys, *argv)
        except redis.exceptions.NoScriptError:
            # Redis restarted and lost its script cache.
            self._create_sha = await self.client.script_load(_CREATE)
            await self.batcher.call("EVALSHA", self._create_sha, len(keys), *keys, *argv)

    async def get(self, id: str) -> Job | None:
        flat = await self.client.hgetall(self._job + id)
        return decode_fields(flat) if flat else None

    def update_args(
        self, changes: Mapping[str, Any], when: Collection[JobStatus] | None, add_attempt: bool, ack: StreamAck | None = None
    ) -> list[Any]:
        check_changes(changes)
        allowed = "" if when is None else "," + ",".join(JobStatus(s).value for s in when) + ","
        argv: list[Any] = [self.options.prefix, allowed, "1" if add_attempt else "0"]
        if ack is None:
            argv += ["0", ""]
        else:
            argv += [len(ack.entries), ack.group, *ack.entries]
        for name, value in encode_fields(changes).items():
            argv += [name, value]
        return argv

    async def update(
        self,
        id: str,
        changes: Mapping[str, Any],
        *,
        when: Collection[JobStatus] | None = None,
        add_attempt: bool = False,
        ack: StreamAck | None = None,
        send: StreamMessage | None = None,
        publish: str | None = None,
    ) -> tuple[Job | None, bool]:
        """:meth:`JobStore.update <plugboard.plugins.jobs.store.JobStore.update>`, and in the same command:
        with ``publish`` (a pubsub channel on this Redis) the job's event published if the update applied;
        with ``ack`` the broker's entries of this delivery acknowledged, after the update;
        with ``send`` (not with ``ack`` or ``publish``) the job's message added to its stream if the update applied."""
        if ack is not None and not ack.entries:
            ack = None
        if send is not None:
            if ack is not None or publish is not None:
                raise ValueError("update: send goes without ack and publish")
            return await self._update_send(id, changes, when, add_attempt, send)
        argv = self.update_args(changes, when, add_attempt, ack)
        keys = (2, self._job + id, ack.stream) if ack is not None else (1, self._job + id)
        assert self.batcher is not None, "start() first"
        if publish is not None:
            argv.append(publish)
            try:
                reply = await self.batcher.call("EVALSHA", self._update_publish_sha, *keys, *argv)
            except redis.exceptions.NoScriptError:
                self._update_publish_sha = await self.client.script_load(_UPDATE_PUBLISH)
                reply = await self.batcher.call("EVALSHA", self._update_publish_sha, *keys, *argv)
            return decode_update(reply)
        try:
            reply = await self.batcher.call("EVALSHA", self._update_sha, *keys, *argv)
        except redis.exceptions.NoScriptError:
            # Redis restarted and lost its script cache.
            self._update_sha = await self.client.script_load(_UPDATE)
            reply = await self.batcher.call("EVALSHA", self._update_sha, *keys, *argv)
        return decode_update(reply)

    async def _update_send(
        self, id: str, changes: Mapping[str, Any], when: Collection[JobStatus] | None, add_attempt: bool, send: StreamMessage
    ) -> tuple[Job | None, bool]:
        argv = [*self.update_args(changes, when, add_attempt), send.data]
        try:
            reply = await self.client.execute_command("EVALSHA", self._update_send_sha, 2, self._job + id, send.stream, *argv)
        except redis.exceptions.NoScriptError:
            self._update_send_sha = await self.client.script_load(_UPDATE_SEND)
            reply = await self.client.execute_command("EVALSHA", self._update_send_sha, 2, self._job + id, send.stream, *argv)
        return decode_update(reply)

    def _index(self, status: JobStatus | None, type: str | None) -> str:
        if status is not None and type is not None:
            return f"{self._idx}st:{JobStatus(status).value}:{type}"
        if status is not None:
            return f"{self._idx}status:{JobStatus(status).value}"
        if type is not None:
            return f"{self._idx}type:{type}"
        return f"{self._idx}all"

    async def list(self, *, status: JobStatus | None = None, type: str | None = None, first: int = 20, after: str | None = None) -> JobPage:
        index = self._index(status, type)
        top = f"({after}" if after is not None else "+"
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("ZRANGE", index, top, "-", "BYLEX", "REV", "LIMIT", 0, first + 1)
        pipe.zcard(index)
        ids, total = await pipe.execute()
        ids = [_text(i) for i in ids]
        page = ids[:first]
        jobs: list[Job] = []
        if page:
            pipe = self.client.pipeline(transaction=False)
            for job_id in page:
                pipe.hgetall(self._job + job_id)
            # A job deleted between the two round trips is left out.
            jobs = [decode_fields(flat) for flat in await pipe.execute() if flat]
        return JobPage(jobs, page[-1] if page else None, len(ids) > first, total)

    async def waiting_since(self, before: float, limit: int) -> list[Job]:
        """PENDING jobs last changed before ``before`` and RETRYING ones due
        before it, oldest first (ids sort by creation), at most ``limit`` of
        each (the broker's reconcile: a bounded scan, not a hot path)."""
        out: list[Job] = []
        for status, field in ((JobStatus.PENDING, "updated_at"), (JobStatus.RETRYING, "run_at")):
            ids = await self.client.execute_command("ZRANGE", f"{self._idx}status:{status.value}", "-", "+", "BYLEX", "LIMIT", 0, limit)
            if not ids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._job + _text(job_id))
            for flat in await pipe.execute():
                if not flat:
                    continue
                job = decode_fields(flat)
                when = getattr(job, field)
                if job.status is status and when is not None and when < before:
                    out.append(job)
        return out

    async def counts(self) -> dict[JobStatus, int]:
        pipe = self.client.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(f"{self._idx}status:{status.value}")
        return dict(zip(JobStatus, await pipe.execute()))

    async def counts_by_type(self, types: Collection[str]) -> dict[tuple[str, JobStatus], int]:
        pairs = [(jtype, status) for jtype in types for status in JobStatus]
        pipe = self.client.pipeline(transaction=False)
        for jtype, status in pairs:
            pipe.zcard(f"{self._idx}st:{status.value}:{jtype}")
        return dict(zip(pairs, await pipe.execute()))

    async def delete_finished_before(self, ts: float) -> int:
        deleted = 0
        for status in FINISHED:
            index = f"{self._idx}status:{status.value}"
            ids = [_text(i) for i in await self.client.zrange(index, 0, -1)]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                pipe = self.client.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hmget(self._job + job_id, ["completed_at", "type"])
                old = [
                    (job_id, _text(jtype))
                    for job_id, (completed, jtype) in zip(chunk, await pipe.execute())
                    if completed is not None and (json.loads(completed) or 0) < ts
                ]
                if not old:
                    continue
                pipe = self.client.pipeline(transaction=True)
                for job_id, jtype in old:
                    pipe.delete(self._job + job_id)
                    for index_key in self._indexes(job_id, status.value, jtype):
                        pipe.zrem(index_key, job_id)
                await pipe.execute()
                deleted += len(old)
        return deleted


def decode_update(reply: Any) -> tuple[Job | None, bool]:
    if reply is None:
        return None, False
    applied, document = reply
    return Job.from_dict(json.loads(document)), bool(int(applied))
