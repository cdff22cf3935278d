"""What every direct-channel connection has, and the errors they answer with.

This module owns :class:`ChannelError` (a refusal with its HTTP status and
code), the :class:`Connection` base (subscriptions, tasks, the identity's
expiry timer, freed together when the connection ends) and
:class:`Replayed`, which keeps an event replayed from the history from
being sent again when its live copy arrives.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable

from aiohttp import web

from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.middleware import REQUEST_ID
from plugboard.plugins.realtime.channels.publishing import PUBSUB_NAMESPACE
from plugboard.plugins.realtime.history import ChannelEvent, parse_event_id

if TYPE_CHECKING:
    from plugboard.graphql.context import Context
    from plugboard.plugins.realtime.channels.hub import ChannelHub

__all__ = ["ChannelError", "Connection", "Replayed", "check_last_id", "expires_in", "http_error"]


class ChannelError(Exception):
    """A request the channels refuse: ``message`` for the client, HTTP ``status``, ``code``."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST", *, topic: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.topic = topic


def check_last_id(value: Any) -> str | None:
    """``value`` if it is a valid event id (None when empty). :raises ChannelError: it is not."""
    if value is None or value == "":
        return None
    try:
        parse_event_id(value)
    except ValueError as e:
        raise ChannelError(str(e)) from None
    return value


def http_error(
    message: str, status: int, code: str, *, topic: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error a request gets before its stream starts: ``{"error", "code", "topic"?}``."""
    body: dict[str, Any] = {"error": message, "code": code}
    if topic is not None:
        body["topic"] = topic
    return web.json_response(body, status=status, headers=headers)


def expires_in(context: "Context") -> float | None:
    """Seconds until the context's identity expires (None: it does not)."""
    expires_at = context.identity_expires_at
    if expires_at is None:
        return None
    return float(expires_at) - time.time()


async def build_context(request: web.Request, transport: str) -> "Context":
    app = request.app
    return await app[keys.CONTEXT_BUILDER].build(app, request, request_id=request[REQUEST_ID], transport=transport)


class Connection(abc.ABC):
    """What every direct-channel connection has: subscriptions, tasks, replay bookkeeping."""

    def __init__(self, hub: "ChannelHub", request: web.Request, context: "Context") -> None:
        self.hub = hub
        self.app = request.app
        self.request = request
        self.context = context
        self.config = hub.config
        self.tasks: set[asyncio.Task] = set()
        self.subscriptions: dict[str, Any] = {}
        self._expiry: asyncio.TimerHandle | None = None

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def arm_expiry(self) -> None:
        remaining = expires_in(self.context)
        if remaining is not None:
            self._expiry = asyncio.get_running_loop().call_later(max(remaining, 0.0), self.on_expired)

    @abc.abstractmethod
    def on_expired(self) -> None:
        """Protocol-specific: each subclass implements it."""

    @abc.abstractmethod
    async def shut_down(self) -> None:
        """Protocol-specific: each subclass implements it."""

    async def subscribe(self, topic: str) -> Any:
        pubsub = self.app.get(keys.PUBSUB)
        if pubsub is None:
            raise ChannelError("no pubsub provider is running", 503, "SERVICE_UNAVAILABLE")
        sub = pubsub.subscribe(PUBSUB_NAMESPACE + topic, queue_size=self.config.queue_size, overflow=self.config.overflow)
        self.subscriptions[topic] = sub
        return sub

    async def release(self) -> None:
        """Cancel every task, close every subscription. Idempotent."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await cancel_until_done(list(self.tasks))
        subscriptions, self.subscriptions = self.subscriptions, {}
        for sub in subscriptions.values():
            await sub.close()


class Replayed:
    """Ids sent from the history, so their live copies are not sent again."""

    __slots__ = ("ids", "newest")

    def __init__(self, events: list[ChannelEvent]) -> None:
        self.ids = {e.id for e in events}
        self.newest = parse_event_id(events[-1].id) if events else None

    def seen(self, event_id: str) -> bool:
        if not self.ids:
            return False
        if event_id in self.ids:
            self.ids.discard(event_id)
            return True
        if self.newest is not None and parse_event_id(event_id) > self.newest:
            # Live delivery has passed the replay: nothing more to filter.
            self.ids.clear()
        return False

