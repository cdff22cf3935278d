"""Event retention for direct channels: what a reconnecting client missed.

Owns the history behind ``Last-Event-ID``: every event published to a direct
channel (``/events``, ``/ws``) is appended here first, and a client that
reconnects with the id of the last event it saw gets everything after it,
within the retention window (``realtime.channels.retention`` seconds and at
most ``retention_max_events`` events per topic; in memory, also at most
``max_retained_topics`` topics and ``max_retained_bytes`` in all).

Event ids are ``<ms>-<seq>`` (the Redis stream id format) and are global and
ordered across all topics of one app (memory) or of every instance sharing a
Redis: one client-side id therefore positions a client in every topic it
follows, and ids compare as ``(ms, seq)`` integer pairs.

Two implementations:

* :class:`MemoryHistory`: one ring buffer per topic in this process; ids
  come from a per-app counter; bounded in topics and bytes, the topics
  published to least recently giving way first. Lost on restart, like the
  memory pubsub.
* :class:`RedisHistory`: one Redis stream per topic
  (``<prefix>channels:<topic>``). A Lua script draws the id from one
  per-prefix counter (``<prefix>channels-last-id``) so ids stay globally
  ordered across topics and instances, then ``XADD ... MAXLEN ~ N`` and
  ``XTRIM ... MINID ~`` trim by count and age, and the stream expires once
  it is quiet for the retention window. Reads use ``XREVRANGE`` after the client's id with Redis's own
  clock for the age cut-off, so every instance answers alike.
"""

from __future__ import annotations

import collections
import json
import re
import time
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import attrs

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "ChannelEvent",
    "EventHistory",
    "MemoryHistory",
    "RedisHistory",
    "parse_event_id",
]

# ms (up to 15 digits) and a sequence number: what Redis stream ids look like.
_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,15})$")


def parse_event_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``.

    :raises ValueError: ``value`` is not an event id of the ``<ms>-<seq>`` form.
    """
    match = _EVENT_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid event id {value!r}: expected '<milliseconds>-<sequence>' as sent in an event's id")
    return int(match.group(1)), int(match.group(2))


@attrs.define(frozen=True, slots=True)
class ChannelEvent:
    """One event of a direct channel: its id, topic and JSON-compatible data."""

    id: str
    topic: str
    data: Any


class EventHistory(Protocol):
    """Where direct-channel events are kept for replay."""

    async def append(self, topic: str, data_json: str) -> str:
        """Store an event (its data already encoded as JSON text); return its new id."""

    async def after(self, last_id: str, topics: Sequence[str]) -> list[ChannelEvent]:
        """Retained events of ``topics`` with an id greater than ``last_id``, oldest first."""


#: What one retained event costs besides its JSON (the tuple, the str
#: header, the deque slot), and one topic besides its events (its deque,
#: the ordered dict's entry and link, the key): counted against
#: ``max_bytes`` so a flood of tiny events is bounded too.
EVENT_OVERHEAD = 160
TOPIC_OVERHEAD = 1024


class MemoryHistory:
    """Per-topic ring buffers in this process, with ids from one per-app counter.

    Bounded four ways: ``retention`` seconds, ``max_events`` per topic,
    ``max_topics`` topics and ``max_bytes`` in all. Events are kept as their
    JSON text (decoded on replay), so what is counted is what is held. Past
    either of the last two caps, the topic published to least recently gives
    way first: its oldest events go, then the topic itself.

    :param retention: seconds an event stays replayable.
    :param max_events: events kept per topic (the oldest go first).
    :param max_topics: topics kept.
    :param max_bytes: the events' JSON (UTF-8) plus :data:`EVENT_OVERHEAD`
        per event and :data:`TOPIC_OVERHEAD` per topic, all topics together.
    :param clock: returns the time in seconds (tests substitute their own).
    """

    def __init__(
        self,
        *,
        retention: float,
        max_events: int,
        max_topics: int = 10_000,
        max_bytes: int = 8 * 1024 * 1024,
        clock: Any = time.time,
    ) -> None:
        self.retention = retention
        self.max_events = max_events
        self.max_topics = max_topics
        self.max_bytes = max_bytes
        self._clock = clock
        # topic -> deque of (ms, seq, data JSON, counted size); ordered by id
        # since ids only grow. The dict is ordered by the last publish:
        # least recently published first (an OrderedDict: moving a key to the
        # end and reading the first are O(1)).
        self._topics: collections.OrderedDict[str, collections.deque[tuple[int, int, str, int]]] = collections.OrderedDict()
        self._bytes = 0
        self._last = (0, -1)
        self._next_sweep = 0.0

    @property
    def retained_bytes(self) -> int:
        """What the retained events count for against ``max_bytes``."""
        return self._bytes

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def append(self, topic: str, data_json: str) -> str:
        now = self._now_ms()
        last_ms, last_seq = self._last
        # Like Redis: never go backwards, even if the wall clock does.
        ms, seq = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        self._last = (ms, seq)
        size = len(data_json.encode("utf-8")) + EVENT_OVERHEAD
        buffer = self._topics.get(topic)
        if buffer is None:
            buffer = self._topics[topic] = collections.deque()
            self._bytes += TOPIC_OVERHEAD
        else:
            self._topics.move_to_end(topic)
        buffer.append((ms, seq, data_json, size))
        self._bytes += size
        if len(buffer) > self.max_events:
            self._bytes -= buffer.popleft()[3]
        self._expire(now)
        self._enforce_caps()
        return f"{ms}-{seq}"

    def _drop_topic(self, topic: str) -> None:
        buffer = self._topics.pop(topic)
        self._bytes -= TOPIC_OVERHEAD + sum(entry[3] for entry in buffer)

    def _enforce_caps(self) -> None:
        while len(self._topics) > self.max_topics:
            self._drop_topic(next(iter(self._topics)))
        while self._bytes > self.max_bytes and self._topics:
            # The least recently published topic's oldest event; a hard cap,
            # so even the event just appended goes if it alone is too big
            # (live delivery does not depend on the history).
            topic = next(iter(self._topics))
            buffer = self._topics[topic]
            self._bytes -= buffer.popleft()[3]
            if not buffer:
                self._drop_topic(topic)

    def _expire(self, now_ms: int) -> None:
        # Sweep every topic now and then (not on every append) so topics that
        # went quiet do not keep their last events, or their deque, forever.
        if now_ms < self._next_sweep:
            return
        self._next_sweep = now_ms + max(self.retention * 1000 / 4, 1.0)
        cutoff = now_ms - self.retention * 1000
        for topic in list(self._topics):
            buffer = self._topics[topic]
            while buffer and buffer[0][0] < cutoff:
                self._bytes -= buffer.popleft()[3]
            if not buffer:
                self._drop_topic(topic)

    async def after(self, last_id: str, topics: Sequence[str]) -> list[ChannelEvent]:
        start = parse_event_id(last_id)
        cutoff = self._now_ms() - self.retention * 1000
        found: list[tuple[int, int, ChannelEvent]] = []
        for topic in dict.fromkeys(topics):
            for ms, seq, data_json, _size in self._topics.get(topic, ()):
                if (ms, seq) > start and ms >= cutoff:
                    found.append((ms, seq, ChannelEvent(f"{ms}-{seq}", topic, json.loads(data_json))))
        found.sort(key=lambda item: (item[0], item[1]))
        return [event for _ms, _seq, event in found]

    def __len__(self) -> int:
        """Events held right now, all topics together."""
        return sum(len(buffer) for buffer in self._topics.values())


# KEYS[1]: the id counter, KEYS[2]: the topic's stream.
# ARGV: data JSON, max events, retention in ms.
_APPEND = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[1])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms = tonumber(lms)
  if lms >= ms then
    ms = lms
    seq = tonumber(lseq) + 1
  end
end
local id = string.format('%d-%d', ms, seq)
redis.call('SET', KEYS[1], id)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'data', ARGV[1])
local retention = tonumber(ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d-0', math.max(ms - retention, 0)))
redis.call('PEXPIRE', KEYS[2], retention + 1000)
return id
"""

# KEYS: the topics' streams. ARGV: last id, max events, retention in ms.
# Returns, per key, a flat list of id, data pairs, oldest first.
_AFTER = """
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local entries = redis.call('XREVRANGE', KEYS[i], '+', '(' .. ARGV[1], 'COUNT', ARGV[2])
  local flat = {}
  for j = #entries, 1, -1 do
    local id = entries[j][1]
    local ms = tonumber(string.match(id, '^(%d+)-'))
    if ms >= cutoff then
      local fields = entries[j][2]
      local data = nil
      for k = 1, #fields, 2 do
        if fields[k] == 'data' then data = fields[k + 1] end
      end
      if data then
        flat[#flat + 1] = id
        flat[#flat + 1] = data
      end
    end
  end
  out[i] = flat
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHistory:
    """Per-topic Redis streams with globally ordered ids (see the module docstring).

    :param client: the app's shared ``redis.asyncio`` client.
    :param prefix: key prefix, so several apps can share one Redis.
    :param retention: seconds an event stays replayable.
    :param max_events: events kept per topic.
    """

    def __init__(self, client: "redis.asyncio.Redis", *, prefix: str, retention: float, max_events: int) -> None:
        self.client = client
        self.prefix = prefix
        self.retention = retention
        self.max_events = max_events
        self._retention_ms = max(int(retention * 1000), 1)
        # register_script only wraps the text: EVALSHA, loading it on NOSCRIPT
        # (so a restarted, empty Redis is handled).
        self._append = client.register_script(_APPEND)
        self._after = client.register_script(_AFTER)

    def stream_key(self, topic: str) -> str:
        return f"{self.prefix}channels:{topic}"

    @property
    def counter_key(self) -> str:
        # Outside the "channels:" namespace, so no topic's stream can collide with it.
        return f"{self.prefix}channels-last-id"

    async def append(self, topic: str, data_json: str) -> str:
        result = await self._append(
            keys=[self.counter_key, self.stream_key(topic)],
            args=[data_json, self.max_events, self._retention_ms],
        )
        return _text(result)

    async def after(self, last_id: str, topics: Sequence[str]) -> list[ChannelEvent]:
        parse_event_id(last_id)
        unique = list(dict.fromkeys(topics))
        if not unique:
            return []
        per_topic = await self._after(
            keys=[self.stream_key(t) for t in unique],
            args=[last_id, self.max_events, self._retention_ms],
        )
        found: list[tuple[tuple[int, int], ChannelEvent]] = []
        for topic, flat in zip(unique, per_topic):
            for i in range(0, len(flat), 2):
                event_id = _text(flat[i])
                event = ChannelEvent(event_id, topic, json.loads(flat[i + 1]))
                found.append((parse_event_id(event_id), event))
        found.sort(key=lambda item: item[0])
        return [event for _key, event in found]
