"""The ``redis`` broker: taskiq-redis's stream broker, acknowledged, with two fixes.

Jobs are entries of the Redis stream ``jobs.queue`` (fields ``data``, the
taskiq message, and ``job``, the job id), read by ``plugboard worker``
processes through one consumer group. An entry is acknowledged (XACK, then
XDEL so the stream holds only live work) only when the runner settles its
job: a final state, or a retry handed to the delayed set. A worker that dies
leaves its entries pending, and another worker claims them.

What this subclass changes in taskiq-redis 1.2.4's ``RedisStreamBroker``:

- its ``listen()`` skips XAUTOCLAIM while the stream is idle (``if not
  fetched: continue``), so a dead worker's entries wait until new work
  arrives. Here every loop turn runs, in one pipelined round trip: moving
  due retries from the delayed set to the stream, XAUTOCLAIM of entries idle
  longer than ``idle_timeout``, and the blocking XREADGROUP;
- a job running longer than ``idle_timeout`` would be claimed by another
  worker while still running: a heartbeat XCLAIMs (JUSTID, same consumer)
  this worker's in-flight entries every ``idle_timeout / 3``, resetting
  their idle time;
- retries wait in a sorted set ``<queue>:delayed`` (score = due time), so a
  backoff survives the worker that scheduled it;
- :meth:`RedisBroker.resend_missing` adds back the jobs whose message was
  lost (a crash between the record write and the XADD), for the reconcile
  in :mod:`plugboard.plugins.jobs.reconcile`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import time
from typing import Any, AsyncGenerator

import redis.exceptions
from redis.asyncio import Redis
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from plugboard.errors import ProviderError
from plugboard.providers.redis import reconnecting
from plugboard.providers.batching import Batcher
from plugboard.plugins.jobs.brokers import BrokerOptions, encode
from plugboard.cancelling import cancel_until_done
from plugboard.plugins.jobs.store.redis import StreamAck, StreamMessage

logger = logging.getLogger("plugboard.jobs.broker")

GROUP = "plugboard"
_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: Seconds between a busy consumer's upkeep turns (due retries moved, idle entries claimed).
UPKEEP_INTERVAL = 0.1

# KEYS[1] = the delayed set, KEYS[2] = the stream; ARGV[1] = now.
# Members are "<job id>|<message>".
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  redis.call('XADD', KEYS[2], '*', 'data', string.sub(m, sep + 1), 'job', string.sub(m, 1, sep - 1))
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""

# The reconcile (plugboard.plugins.jobs.reconcile): KEYS[1] = the stream,
# KEYS[2] = the delayed set; ARGV[1] = the most entries either may hold for
# the scan, ARGV[2] = the re-send marker's prefix, ARGV[3] = its lifetime
# (ms), then job id, message, job id, message ... of the candidates.
# A candidate with no stream entry (read or not: entries leave the stream
# only when settled) and no delayed retry is added to the stream, once per
# marker lifetime (SET NX): atomic, so several workers reconciling at once
# send a lost job once. Returns the re-sent ids, or -1 when the stream or
# the delayed set is too long to scan this time.
_RESEND = """
local limit = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) > limit or redis.call('ZCARD', KEYS[2]) > limit then return -1 end
local present = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'job' then present[f[i + 1]] = true end
  end
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local sep = string.find(m, '|', 1, true)
  if sep then present[string.sub(m, 1, sep - 1)] = true end
end
local sent = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if not present[id] and redis.call('SET', ARGV[2] .. id, '1', 'NX', 'PX', ARGV[3]) then
    redis.call('XADD', KEYS[1], '*', 'data', ARGV[i + 1], 'job', id)
    sent[#sent + 1] = id
  end
end
return sent
"""


class RedisBroker(RedisStreamBroker):
    """:mod:`broker <plugboard.plugins.jobs.brokers>` ``redis``: a stream, a consumer group, acknowledgement.

    :param options: ``redis_url`` (required), ``queue`` (the stream),
        ``idle_timeout`` (claim / heartbeat), ``concurrency`` (how many entries
        one read may take; ``plugboard worker --concurrency`` sets
        :attr:`concurrency`).
    """

    in_process = False

    def __init__(self, options: BrokerOptions | None = None) -> None:
        self.options = options = options or BrokerOptions()
        if not options.redis_url:
            raise ProviderError("jobs.broker: redis needs jobs.redis or redis.url (or REDIS_URL)")
        idle_ms = max(1, int(options.idle_timeout * 1000))
        super().__init__(
            options.redis_url,
            queue_name=options.queue,
            consumer_group_name=GROUP,
            consumer_name=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            # From the start of the stream: it holds only unacknowledged work.
            consumer_id="0",
            idle_timeout=idle_ms,
            # Short blocks: each loop turn also claims and moves due retries.
            xread_block=min(1000, max(50, idle_ms // 3)),
            # Stale pooled connections (after a Redis restart) reconnect.
            retry=reconnecting(),
        )
        self.concurrency = options.concurrency
        #: Entries read beyond the free slots (see :meth:`listen`): None for
        #: :attr:`concurrency` more; 0 reads only what can start.
        self.read_ahead: int | None = None
        self.delayed_key = f"{options.queue}:delayed"
        self._redis: Redis | None = None
        self.batcher: Batcher | None = None
        self._own_batcher: Batcher | None = None
        self._move_due: Any = None
        #: Stream entry id -> job id of what this consumer holds (read ahead or running).
        self._inflight: dict[bytes, str] = {}
        #: Entries read ahead, not handed out yet: (entry id, message).
        self._ahead: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._redis = Redis(connection_pool=self.connection_pool)
        # Replaced by the job store's when both share Redis (runtime.lifespan);
        # this one is closed with the broker either way.
        self.batcher = self._own_batcher = Batcher(self._redis)
        try:
            await self.startup()
            self._move_due = await self._redis.script_load(_MOVE_DUE)
        except _ERRORS + (redis.exceptions.RedisError,) as e:
            await self.connection_pool.disconnect()
            raise ProviderError(f"jobs.broker: redis: cannot reach {self._where()}: {e}") from e

    async def close(self) -> None:
        if self._heartbeat is not None:
            await cancel_until_done([self._heartbeat])
            self._heartbeat = None
        await self._give_back()
        if self._own_batcher is not None:
            await self._own_batcher.aclose()
        await self.shutdown()

    async def check(self) -> None:
        try:
            await self.redis.ping()
        except _ERRORS + (redis.exceptions.RedisError,) as e:
            raise ProviderError(f"jobs.broker: redis does not answer: {e}") from e

    def _where(self) -> str:
        from plugboard.providers.redis import mask_url

        return mask_url(self.options.redis_url or "")

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "start() first"
        return self._redis

    # -- the job interface ------------------------------------------------------

    async def kick(self, message: Any) -> None:
        assert self.batcher is not None, "start() first"
        # The batcher's path, not redis-py's: a third of an enqueue's CPU with live updates on.
        await self.batcher.call("XADD", self.queue_name, "*", "data", message.message, "job", message.task_id)

    async def send(self, task: str, job_id: str) -> None:
        await self.kick(encode(self, task, job_id))

    def message(self, task: str, job_id: str) -> StreamMessage:
        """The job's message, for the job store to add with the record
        (:meth:`RedisJobStore.create <plugboard.plugins.jobs.store.redis.RedisJobStore.create>`):
        the same entry :meth:`send` adds."""
        return StreamMessage(self.queue_name, encode(self, task, job_id).message)

    async def send_later(self, task: str, job_id: str, at: float) -> None:
        message = encode(self, task, job_id)
        await self.redis.zadd(self.delayed_key, {job_id.encode() + b"|" + message.message: at})

    async def settle(self, job_id: str) -> None:
        ids = self.held(job_id)
        if ids:
            await self._ack(ids)

    async def resend_missing(self, jobs: list[tuple[str, str]], *, scan_limit: int, marker_ttl: float) -> list[str] | None:
        """Add to the stream the jobs of ``jobs`` (``(task, job id)`` pairs)
        that have neither a stream entry nor a delayed retry (see ``_RESEND``);
        the ids sent, or None when the queue was too long to scan."""
        argv: list[Any] = [scan_limit, f"{self.queue_name}:resent:", max(1, int(marker_ttl * 1000))]
        for task, job_id in jobs:
            argv += [job_id, encode(self, task, job_id).message]
        reply = await self.redis.eval(_RESEND, 2, self.queue_name, self.delayed_key, *argv)
        if isinstance(reply, int):
            return None
        return [i.decode() if isinstance(i, bytes) else i for i in reply]

    def held(self, job_id: str) -> list[bytes]:
        """The stream entries of ``job_id`` this consumer holds (read, not yet acknowledged)."""
        return [entry for entry, job in self._inflight.items() if job == job_id]

    def acknowledgement(self, entries: list[bytes]) -> StreamAck:
        """``entries``' acknowledgement, for the job store to send with a final record update
        (:meth:`RedisJobStore.update <plugboard.plugins.jobs.store.redis.RedisJobStore.update>`);
        call :meth:`acknowledged` once it succeeded."""
        return StreamAck(self.queue_name, GROUP, entries)

    def acknowledged(self, entries: list[bytes]) -> None:
        for entry in entries:
            self._inflight.pop(entry, None)

    async def _ack(self, ids: list[bytes]) -> None:
        assert self.batcher is not None, "start() first"
        # Concurrent settles share one pipeline; XDEL keeps the stream to live work.
        await asyncio.gather(
            self.batcher.call("XACK", self.queue_name, GROUP, *ids), self.batcher.call("XDEL", self.queue_name, *ids)
        )
        for entry in ids:
            self._inflight.pop(entry, None)

    def _acker(self, entry: bytes) -> Any:
        async def ack() -> None:
            await self._ack([entry])

        return ack

    # -- consuming ------------------------------------------------------------

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Entries for this worker: due retries moved, idle ones claimed, new ones read.

        While the stream has a backlog (the last read got all it asked
        for), a read takes up to :attr:`read_ahead` entries more than the
        free slots, so a slot freed by a finished job starts the next one at
        once instead of after a read's round trip: reading only the free
        slots (one or two entries per read under load) left a worker waiting
        on Redis a third of its time (issue 16). Without a backlog it reads
        only the free slots, so an idle worker is not left without the few
        entries another one took ahead. Entries read ahead are held like
        running ones: the heartbeat keeps them from other workers, and
        :meth:`close` gives back those never handed out.
        """
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="plugboard.jobs.heartbeat")
        backoff = 0.1
        # Moving due retries and claiming idle entries at most this often (and
        # on every turn that found the stream idle): a busy worker reads every
        # few jobs, and three commands per read were a fifth of its CPU.
        upkeep_every = min(UPKEEP_INTERVAL, self.block / 1000)
        next_upkeep = 0.0
        backlog = False
        while True:
            while self._ahead:
                entry, data = self._ahead.popleft()
                # Gone when a duplicate's job finished meanwhile and acknowledged it too.
                if entry in self._inflight:
                    yield AckableMessage(data=data, ack=self._acker(entry))
            count = max(1, self.concurrency - len(self._inflight))
            if backlog:
                count += self.concurrency if self.read_ahead is None else self.read_ahead
            now = time.monotonic()
            try:
                if now >= next_upkeep:
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.evalsha(self._move_due, 2, self.delayed_key, self.queue_name, time.time())
                    pipe.xautoclaim(self.queue_name, GROUP, self.consumer_name, min_idle_time=self.idle_timeout, start_id="0-0", count=count)
                    pipe.xreadgroup(GROUP, self.consumer_name, {self.queue_name: ">"}, count=count, block=self.block)
                    _moved, claimed, fetched = await pipe.execute()
                    next_upkeep = now + upkeep_every
                else:
                    claimed = None
                    fetched = await self.redis.xreadgroup(GROUP, self.consumer_name, {self.queue_name: ">"}, count=count, block=self.block)
                    if not fetched:
                        next_upkeep = 0.0  # idle: claim and move on the next turn
            except redis.exceptions.NoScriptError:
                # Redis restarted and lost its script cache.
                self._move_due = await self.redis.script_load(_MOVE_DUE)
                continue
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                # The stream was deleted (FLUSHALL, a Redis without persistence restarted).
                await self._declare_consumer_group()
                continue
            except _ERRORS as e:
                logger.warning("jobs: redis unavailable (%s); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            entries = list(claimed[1]) if claimed else []
            for _stream, messages in fetched or []:
                entries.extend(messages)
            backlog = len(entries) >= count
            for entry, fields in entries:
                if not fields:  # claimed but deleted meanwhile
                    continue
                if entry in self._inflight:
                    # Ours and still running (or read ahead): claimed back
                    # because a Redis outage outlasted idle_timeout between heartbeats.
                    continue
                self._inflight[entry] = fields.get(b"job", b"").decode()
                self._ahead.append((entry, fields[b"data"]))

    async def _give_back(self) -> None:
        """Let other workers claim at once the entries read ahead and never handed out.

        They stay pending for this consumer, as idle as if it had died long
        ago (XCLAIM ... IDLE): the next XAUTOCLAIM of any worker takes them,
        in their place in the stream, instead of after ``idle_timeout``.
        """
        ids = [entry for entry, _ in self._ahead if entry in self._inflight]
        self._ahead.clear()
        if not ids or self._redis is None:
            return
        try:
            await self.redis.xclaim(
                self.queue_name, GROUP, self.consumer_name, 0, ids, idle=self.idle_timeout * 10, justid=True
            )
        except _ERRORS + (redis.exceptions.RedisError,) as e:
            # They are still claimed once idle_timeout has passed.
            logger.warning("jobs: could not give back %d entries read ahead: %s", len(ids), e)
        for entry in ids:
            self._inflight.pop(entry, None)

    async def _beat(self) -> None:
        interval = self.options.idle_timeout / 3
        while True:
            await asyncio.sleep(interval)
            ids = list(self._inflight)
            if not ids:
                continue
            try:
                await self.redis.xclaim(self.queue_name, GROUP, self.consumer_name, 0, ids, justid=True)
            except _ERRORS + (redis.exceptions.RedisError,) as e:
                logger.warning("jobs: heartbeat failed: %s", e)
