"""Presence: who is online, with a TTL, across every instance sharing a Redis.

This module owns the presence store (in-process, or a Redis sorted set of
user -> last-seen when ``redis.url`` is set), the sweeper task that turns
expired users offline without waiting for a clean disconnect, the GraphQL
surface (``heartbeat``, ``onlineUsers``, ``userOnline``) and :func:`touch`,
which the WebSocket and SSE transports call whenever a client shows a sign
of life. User ids come from :mod:`~plugboard.plugins.realtime.identity`.

Events go out on the pubsub topic :data:`TOPIC` as
``{"id": user, "online": bool, "lastSeen": unix seconds}``; a transition is
published once, by the instance that made it: the one whose write found the
user offline (Redis: ``ZSCORE`` + ``ZADD`` in one transaction), or whose
sweep removed the user (Redis: an atomic script that reads and removes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from aiohttp import web

from plugboard.providers import pubsub
from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.identity import current_user, identity_id
from plugboard.plugins.realtime.keys import PRESENCE
from plugboard.plugins.realtime.topics import topic_events

logger = logging.getLogger("plugboard.realtime.presence")

#: The pubsub topic presence transitions are published on.
TOPIC = "presence"
#: The Redis sorted set (member: user id, score: last heartbeat, unix seconds).
REDIS_KEY = "plugboard:realtime:presence"
#: At most this many users are turned offline per sweep round trip.
_SWEEP_BATCH = 500

#: This feature's SDL fragment; composition errors name this file and line.
SCHEMA = Path(__file__).with_name("presence.graphql")


# ---------------------------------------------------------------------------
# Stores
# ---------------------------------------------------------------------------


class PresenceStore(Protocol):
    """Last-seen times of online users; ``touch`` and ``expire`` report transitions."""

    async def touch(self, user_id: str, now: float) -> bool:
        """Record a heartbeat; True when the user was offline before it."""

    async def online(self, now: float) -> list[tuple[str, float]]:
        """``(user, last seen)`` of users seen within the TTL, by user id."""

    async def expire(self, now: float) -> list[tuple[str, float]]:
        """Remove users not seen within the TTL; return the ones this call removed."""


class MemoryPresenceStore:
    """Presence for one process: a dict of user -> last heartbeat."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[str, float] = {}

    async def touch(self, user_id: str, now: float) -> bool:
        previous = self._seen.get(user_id)
        self._seen[user_id] = max(now, previous or now)
        return previous is None or previous <= now - self.ttl

    async def online(self, now: float) -> list[tuple[str, float]]:
        cutoff = now - self.ttl
        return sorted((u, t) for u, t in self._seen.items() if t > cutoff)

    async def expire(self, now: float) -> list[tuple[str, float]]:
        cutoff = now - self.ttl
        expired = [(u, t) for u, t in self._seen.items() if t <= cutoff]
        for user, _ in expired:
            del self._seen[user]
        return expired


# Reads and removes in one step, so a heartbeat landing between the two on
# another instance cannot be removed, and two sweepers never both report the
# same user: Redis runs a script atomically.
_EXPIRE_SCRIPT = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #items, 2 do
  redis.call('ZREM', KEYS[1], items[i])
end
return items
"""


class RedisPresenceStore:
    """Presence shared by every instance: one sorted set, member = user, score = last seen."""

    def __init__(self, client: Any, ttl: float, key: str = REDIS_KEY) -> None:
        self.ttl = ttl
        self.key = key
        self._client = client
        self._expire = client.register_script(_EXPIRE_SCRIPT)

    async def touch(self, user_id: str, now: float) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zscore(self.key, user_id)
            # GT: an instance whose clock lags cannot move a user back in time.
            pipe.zadd(self.key, {user_id: now}, gt=True)
            previous, _ = await pipe.execute()
        return previous is None or float(previous) <= now - self.ttl

    async def online(self, now: float) -> list[tuple[str, float]]:
        rows = await self._client.zrangebyscore(self.key, f"({now - self.ttl!r}", "+inf", withscores=True)
        return sorted((_text(member), float(score)) for member, score in rows)

    async def expire(self, now: float) -> list[tuple[str, float]]:
        removed: list[tuple[str, float]] = []
        while True:
            items = await self._expire(keys=[self.key], args=[repr(now - self.ttl), _SWEEP_BATCH])
            removed.extend((_text(items[i]), float(items[i + 1])) for i in range(0, len(items), 2))
            if len(items) < 2 * _SWEEP_BATCH:
                return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------
# The tracker: store + events + sweeper
# ---------------------------------------------------------------------------


def _user(user_id: str, online: bool, last_seen: float | None) -> dict[str, Any]:
    return {
        "id": user_id,
        "online": online,
        "lastSeen": dt.datetime.fromtimestamp(last_seen, dt.timezone.utc) if last_seen is not None else None,
    }


class PresenceTracker:
    """One app's presence: the store, transition events and the sweeper.

    Heartbeats from one user are written to the store at most once per
    ``ttl / 8`` by this instance (transports touch on every message), so
    ``lastSeen`` is precise to that interval.
    """

    def __init__(self, app: web.Application, store: PresenceStore, ttl: float) -> None:
        self.app = app
        self.store = store
        self.ttl = ttl
        self.sweep_period = ttl / 4
        self._throttle = ttl / 8
        # user -> when this instance last wrote the user's heartbeat; pruned by
        # every sweep, so it holds at most the users active in the last ttl/8.
        self._written: dict[str, float] = {}
        self._sweep_failing = False

    async def heartbeat(self, user_id: str) -> bool:
        """Record a heartbeat; publish ``online`` when it brought the user online. True if it did."""
        now = time.time()
        written = self._written.get(user_id)
        if written is not None and now - written < self._throttle:
            return False
        came_online = await self.store.touch(user_id, now)
        self._written[user_id] = now
        if came_online:
            await self._publish(user_id, True, now)
        return came_online

    async def online_users(self) -> list[dict[str, Any]]:
        return [_user(u, True, t) for u, t in await self.store.online(time.time())]

    async def sweep(self) -> list[str]:
        """Turn users without a heartbeat within the TTL offline; returns who this call turned offline."""
        now = time.time()
        for user, written in list(self._written.items()):
            if now - written >= self._throttle:
                del self._written[user]
        expired = await self.store.expire(now)
        for user, last_seen in expired:
            await self._publish(user, False, last_seen)
        return [user for user, _ in expired]

    async def run_sweeper(self) -> None:
        """Sweep every ``ttl / 4`` until cancelled; a failing backend is logged, not fatal."""
        while True:
            await asyncio.sleep(self.sweep_period)
            try:
                await self.sweep()
            except Exception as e:  # Redis down: keep trying, log the outage once
                if not self._sweep_failing:
                    logger.warning("presence sweep failed (will retry every %.3gs): %s", self.sweep_period, e)
                self._sweep_failing = True
            else:
                if self._sweep_failing:
                    logger.info("presence sweep works again")
                self._sweep_failing = False

    async def _publish(self, user_id: str, online: bool, last_seen: float) -> None:
        await pubsub.publish(self.app, TOPIC, {"id": user_id, "online": online, "lastSeen": last_seen}, what="presence")


async def touch(app: web.Application, user_id: Any) -> None:
    """Mark ``user_id`` online: transports call this on any message from a signed-in client.

    Cheap when repeated (one store write per user per ``ttl / 8``). Does
    nothing for an anonymous client (``None``) or when presence is off, and
    never raises: a failing backend is logged, so a transport's message loop
    is never broken by presence.
    """
    tracker = app.get(PRESENCE)
    user = identity_id(user_id)
    if tracker is None or user is None:
        return
    try:
        await tracker.heartbeat(user)
    except Exception as e:
        logger.warning("presence: heartbeat of user %r not recorded: %s", user, e)


async def start(app: web.Application, config: Any) -> Callable[[], Awaitable[None]]:
    """Create the store (Redis when ``redis.url`` is set) and start the sweeper."""
    ttl = float(config.presence.ttl)
    client = app.get(keys.REDIS)
    store: PresenceStore = RedisPresenceStore(client, ttl) if client is not None else MemoryPresenceStore(ttl)
    tracker = PresenceTracker(app, store, ttl)
    app[PRESENCE] = tracker
    task = asyncio.create_task(tracker.run_sweeper(), name="realtime.presence.sweeper")

    async def stop() -> None:
        await cancel_until_done([task])

    return stop


# ---------------------------------------------------------------------------
# GraphQL
# ---------------------------------------------------------------------------


def _tracker(context: Any) -> PresenceTracker:
    tracker = context.app.get(PRESENCE)
    if tracker is None:
        raise GraphQLError("presence is not running", "SERVICE_UNAVAILABLE")
    return tracker


async def resolve_heartbeat(parent: Any, args: dict, context: Any, info: Any) -> bool:
    user = current_user(context)
    await _tracker(context).heartbeat(user)
    return True


async def resolve_online_users(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    current_user(context)
    return await _tracker(context).online_users()


def _event_user(payload: Any) -> dict[str, Any] | None:
    # Payloads cross instances as JSON: check the shape rather than trust it.
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or not isinstance(payload.get("online"), bool):
        return None
    last_seen = payload.get("lastSeen")
    if not isinstance(last_seen, (int, float)) or isinstance(last_seen, bool):
        last_seen = None
    return _user(payload["id"], payload["online"], last_seen)


async def subscribe_user_online(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    current_user(context)
    async for user in topic_events(context.app, TOPIC, _event_user):
        yield {"userOnline": user}


RESOLVERS = {
    "Mutation.heartbeat": resolve_heartbeat,
    "Query.onlineUsers": resolve_online_users,
}
SUBSCRIPTIONS = {
    "Subscription.userOnline": subscribe_user_online,
}
