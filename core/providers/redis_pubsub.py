"""The ``redis`` pubsub provider: fan-out across server instances through Redis pub/sub.

Owns the app's single Redis pub/sub connection and the task that reads it.
Local subscribers sit in per-topic registries exactly as with ``memory``;
the Redis channel ``options.prefix + topic`` is subscribed while a topic has
at least one local subscriber. When the connection drops (a Redis restart),
the provider reconnects with backoff and resubscribes every active channel;
local subscriptions stay open throughout, and events published during the
gap are lost (Redis pub/sub keeps nothing) — the gap is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.errors import ProviderError
from plugboard.providers.batching import Batcher
from plugboard.providers.pubsub import Overflow, PubSubOptions
from plugboard.providers.subscriptions import QueueSubscription, check_topic, encode_payload

__all__ = ["RedisPubSub"]

logger = logging.getLogger("plugboard.pubsub")

_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 2.0
# What a Redis outage looks like from redis-py and asyncio.
_CONNECTION_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)

_NO_CLIENT = "pubsub: redis needs redis.url (or REDIS_URL)"


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return "timed out"
    return str(error) or type(error).__name__


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _Link:
    """One live pub/sub connection and what has been sent on it.

    Replaced wholesale on reconnect, so nothing from a dead connection leaks
    into the bookkeeping of the next one.
    """

    __slots__ = ("pubsub", "sent", "unacked")

    def __init__(self, pubsub: redis.asyncio.client.PubSub) -> None:
        self.pubsub = pubsub
        #: Channels SUBSCRIBEd (and not UNSUBSCRIBEd since) on this connection.
        self.sent: set[str] = set()
        #: Channel -> SUBSCRIBE commands whose confirmation has not arrived yet.
        self.unacked: dict[str, int] = {}


class RedisPubSub:
    """The ``PubSub`` protocol over Redis pub/sub, shared by every instance on one Redis.

    :param options: queue size, overflow policy and channel prefix.
    :param app: the application (or any mapping) holding the shared client
        under :data:`plugboard.keys.REDIS`; read by :meth:`start`.
    :param timeout: seconds ``publish``, ``check`` and connecting may take
        before failing with :class:`ProviderError` (Redis unreachable).
    """

    def __init__(
        self,
        options: PubSubOptions | None = None,
        app: Mapping[Any, Any] | None = None,
        *,
        timeout: float = 3.0,
    ) -> None:
        self.options = options or PubSubOptions()
        self._app = app
        self._timeout = timeout
        self._client: redis.asyncio.Redis | None = None
        self._batcher: Batcher | None = None
        self._own_batcher = False
        self._topics: dict[str, dict[QueueSubscription, None]] = {}
        self._link: _Link | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        # Set when the wanted channels may differ from what the link has sent.
        self._dirty = asyncio.Event()
        # Replaced by a fresh Event each time it fires: a broadcast to every
        # wait_ready() whenever confirmations arrive or the link changes.
        self._changed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the pub/sub connection and start the reader.

        :raises ProviderError: no shared Redis client, or Redis unreachable.
        """
        if self._task is not None:
            return
        client = self._app.get(keys.REDIS) if self._app is not None else None
        if client is None:
            raise ProviderError(_NO_CLIENT)
        self._client = client
        # The shared client's batcher: a worker's job events go out with its record updates.
        shared = self._app.get(keys.REDIS_BATCHER) if self._app is not None else None
        self._own_batcher = shared is None
        self._batcher = shared if shared is not None else Batcher(client)
        self._closed = False
        try:
            link = await self._connect()
        except _CONNECTION_ERRORS as e:
            raise ProviderError(f"pubsub: cannot open the redis pub/sub connection: {_reason(e)}") from e
        self._task = asyncio.create_task(self._supervise(link), name="plugboard.pubsub.redis")

    async def close(self) -> None:
        """Stop the reader, release the connection and end every open subscription."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_until_done([task])
        topics, self._topics = self._topics, {}
        for subscribers in topics.values():
            for sub in subscribers:
                sub.end()
        self._notify()
        if self._own_batcher and self._batcher is not None:
            await self._batcher.aclose()

    async def check(self) -> None:
        """Raise :class:`ProviderError` unless Redis answers PING and the pub/sub link is up."""
        client = self._require_open()
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    await client.ping()
                except redis.exceptions.ConnectionError:
                    await client.ping()  # a stale pooled connection, as in publish()
        except _CONNECTION_ERRORS as e:
            raise ProviderError(f"pubsub: redis does not answer PING: {_reason(e)}") from e
        if self._link is None:
            raise ProviderError("pubsub: the redis pub/sub connection is down (reconnecting)")

    # -- the protocol ----------------------------------------------------------

    async def publish(self, topic: str, payload: Any) -> None:
        """Send ``payload`` to the subscribers of ``topic`` on every instance.

        :raises TypeError: the payload is not JSON-serializable, or the topic is not a str.
        :raises ValueError: the topic is empty.
        :raises ProviderError: Redis did not take the event within the timeout, or the provider is closed.
        """
        check_topic(topic)
        data = encode_payload(payload)
        self._require_open()
        assert self._batcher is not None
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    # Concurrent publishes (a worker's jobs, a chat burst)
                    # share one pipeline per round trip.
                    await self._batcher.call("PUBLISH", self.options.prefix + topic, data)
                except redis.exceptions.ConnectionError:
                    # After a Redis restart the pool still holds connections
                    # to the old server; the first use of each fails. Once
                    # more, on a fresh connection, before calling Redis down.
                    await self._batcher.call("PUBLISH", self.options.prefix + topic, data)
        except _CONNECTION_ERRORS as e:
            raise ProviderError(f"pubsub: cannot publish to {topic!r}: redis unavailable ({_reason(e)})") from e

    def channel(self, topic: str) -> str:
        """The Redis channel of ``topic``: what to ``PUBLISH`` (with an :func:`encode_payload` message) to reach
        its subscribers on every instance. For a plugin whose own Lua script on the app's Redis
        (``keys.REDIS``) publishes an event as part of a write."""
        check_topic(topic)
        return self.options.prefix + topic

    def subscribe(self, topic: str, *, queue_size: int | None = None, overflow: Overflow | None = None) -> QueueSubscription:
        """A new subscription to ``topic``; close it when done (or use ``async with``).

        ``queue_size`` and ``overflow`` override the provider's options for this subscriber.

        The Redis SUBSCRIBE is sent in the background; ``await
        sub.wait_ready()`` (or ``async with``) waits until Redis confirmed it.

        :raises ProviderError: the provider is not started or closed.
        """
        check_topic(topic)
        self._require_open()
        sub = QueueSubscription(
            topic,
            queue_size=queue_size or self.options.queue_size,
            overflow=overflow or self.options.overflow,
            on_close=self._remove,
            ready=self._wait_confirmed,
        )
        subscribers = self._topics.get(topic)
        if subscribers is None:
            subscribers = self._topics[topic] = {}
            self._dirty.set()
        subscribers[sub] = None
        return sub

    def subscriber_counts(self) -> dict[str, int]:
        """Open local subscriptions per topic (topics without any are absent)."""
        return {topic: len(subs) for topic, subs in self._topics.items()}

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up (False during an outage)."""
        return self._link is not None

    # -- internals -------------------------------------------------------------

    def _require_open(self) -> redis.asyncio.Redis:
        if self._closed:
            raise ProviderError("pubsub: the redis provider is closed")
        if self._client is None or self._task is None:
            raise ProviderError("pubsub: the redis provider is not started")
        return self._client

    def _remove(self, sub: QueueSubscription) -> None:
        subscribers = self._topics.get(sub.topic)
        if subscribers is None:
            return
        subscribers.pop(sub, None)
        if not subscribers:
            del self._topics[sub.topic]
            self._dirty.set()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_confirmed(self, sub: QueueSubscription, timeout: float) -> bool:
        channel = self.options.prefix + sub.topic
        try:
            async with asyncio.timeout(timeout):
                while True:
                    link = self._link
                    # During an outage do not wait: the reconnect resubscribes.
                    if sub.closed or link is None:
                        return False
                    if channel in link.sent and not link.unacked.get(channel):
                        return True
                    await self._changed.wait()
        except TimeoutError:
            return False

    async def _connect(self) -> _Link:
        assert self._client is not None
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.connect()
        except BaseException:
            await self._release(pubsub)
            raise
        # The shared client's retry policy would reconnect and resubscribe
        # this connection silently; _supervise must see the outage to log
        # the gap. The pooled connection gets its policy back in _release.
        pubsub.connection.plugboard_retry = pubsub.connection.retry
        pubsub.connection.retry = Retry(NoBackoff(), 0)
        return _Link(pubsub)

    @staticmethod
    async def _release(pubsub: redis.asyncio.client.PubSub) -> None:
        """Close ``pubsub`` and return its connection to the pool, even if cancelled meanwhile."""
        connection = pubsub.connection
        if connection is not None and hasattr(connection, "plugboard_retry"):
            connection.retry = connection.plugboard_retry
            del connection.plugboard_retry
        # Errors are ignored (retrieved in cancel_until_done): a broken
        # connection has nothing more to free.
        await cancel_until_done([asyncio.ensure_future(pubsub.aclose())], cancel=False)

    async def _supervise(self, link: _Link | None) -> None:
        """Keep one link alive: serve it, and on failure reconnect with backoff."""
        delay = _BACKOFF_MIN
        lost_at: float | None = None
        lost_reason = ""
        while True:
            try:
                if link is None:
                    link = await self._connect()
                self._link = link
                await self._sync(link)
                if lost_at is not None:
                    logger.warning(
                        "pubsub: redis connection lost (%s); resubscribed %d channel(s) after %.1fs "
                        "(events published meanwhile were not delivered)",
                        lost_reason,
                        len(link.sent),
                        time.monotonic() - lost_at,
                    )
                    lost_at = None
                delay = _BACKOFF_MIN
                self._notify()
                await self._serve(link)
                error: BaseException = ConnectionError("pub/sub connection ended")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = e
                if not isinstance(e, _CONNECTION_ERRORS):
                    logger.error("pubsub: unexpected error on the redis pub/sub connection", exc_info=True)
            finally:
                if link is not None:
                    self._link = None
                    self._notify()
                    await self._release(link.pubsub)
                    link = None
            if lost_at is None:
                lost_at = time.monotonic()
                lost_reason = _reason(error)
                logger.warning("pubsub: redis connection lost (%s); reconnecting", lost_reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _serve(self, link: _Link) -> None:
        """Read and resync on ``link`` until either fails (raises the failure)."""
        reader = asyncio.create_task(self._read(link), name="plugboard.pubsub.redis.read")
        syncer = asyncio.create_task(self._sync_forever(link), name="plugboard.pubsub.redis.sync")
        try:
            done, _ = await asyncio.wait((reader, syncer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_until_done((reader, syncer))
        for task in done:
            task.result()

    async def _sync_forever(self, link: _Link) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._sync(link)

    async def _sync(self, link: _Link) -> None:
        """Make the channels subscribed on ``link`` match the topics with local subscribers."""
        prefix = self.options.prefix
        wanted = {prefix + topic for topic in self._topics}
        remove = link.sent - wanted
        add = wanted - link.sent
        # Bookkeeping before the awaits: subscribe() may run meanwhile and
        # must see what has already been asked for.
        if remove:
            link.sent -= remove
            await link.pubsub.unsubscribe(*remove)
        if add:
            link.sent |= add
            for channel in add:
                link.unacked[channel] = link.unacked.get(channel, 0) + 1
            await link.pubsub.subscribe(*add)

    async def _read(self, link: _Link) -> None:
        prefix_len = len(self.options.prefix)
        pubsub = link.pubsub
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            channel = _text(message["channel"]) if message.get("channel") is not None else ""
            if kind == "message":
                subscribers = self._topics.get(channel[prefix_len:])
                if subscribers:
                    data = message["data"]
                    # A copy: the ``close`` overflow policy removes subscribers mid-loop.
                    for sub in list(subscribers):
                        sub.deliver(data)
            elif kind == "subscribe":
                pending = link.unacked.get(channel, 0)
                if pending <= 1:
                    link.unacked.pop(channel, None)
                else:
                    link.unacked[channel] = pending - 1
                self._notify()
