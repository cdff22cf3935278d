"""Subscription results shared between subscribers who would get the same ones.

Without sharing, every subscriber runs its own source stream and its own
GraphQL execution per event: 5,000 subscribers to one topic means 5,000
executions of the same selection on the same payload. Subscribers whose
operation, variables and identity are equal get equal results (the identity
is in the key, so per-user authorization and filtering stay per user), so one
source stream and one execution per event serve the whole group; each member
gets the results through its own bounded buffer. Plugin steps still run per
subscriber (they wrap the call that joins a group).

A context that must not share (its resolvers read something per connection
other than the identity) sets ``context.share_subscriptions = False``;
``graphql.share_subscriptions: false`` turns sharing off for the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable, Hashable

from plugboard.boundedqueue import BoundedQueue
from plugboard.cancelling import keep_cancelling

logger = logging.getLogger("plugboard.graphql")

_END = object()


class SharedStreams:
    """The groups of one app: key -> one running source stream."""

    def __init__(self, buffer_size: int = 256) -> None:
        self.buffer_size = buffer_size
        self._groups: dict[Hashable, _Group] = {}

    def join(self, key: Hashable, start: Callable[[], AsyncIterator[Any]]) -> "Member":
        """A new member of the group for ``key``; ``start()`` opens the source if there is none."""
        group = self._groups.get(key)
        if group is None:
            group = _Group(self, key, start())
            self._groups[key] = group
        return group.add()

    def __len__(self) -> int:
        return len(self._groups)

    def _remove(self, group: "_Group") -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]


class _Group:
    def __init__(self, owner: SharedStreams, key: Hashable, source: AsyncIterator[Any]) -> None:
        self.owner = owner
        self.key = key
        self.source = source
        self.members: set[Member] = set()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    def add(self) -> "Member":
        member = Member(self, self.owner.buffer_size)
        self.members.add(member)
        return member

    async def _pump(self) -> None:
        try:
            async for result in self.source:
                for member in tuple(self.members):
                    member.push(result)
                # A source that never waits would otherwise starve the loop
                # (members could not even read what was pushed).
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the engine turns resolver errors into results; this is a bug
            logger.exception("shared subscription stream failed")
            for member in tuple(self.members):
                member.push(e)
        finally:
            self.owner._remove(self)
            for member in tuple(self.members):
                member.push(_END)
            with contextlib.suppress(Exception):
                await self.source.aclose()

    def leave(self, member: "Member") -> None:
        self.members.discard(member)
        if not self.members:
            # Last one out closes the source (its generator's finally runs).
            self.owner._remove(self)
            keep_cancelling(self.task)


class Member(BoundedQueue[Any]):
    """One subscriber's view of a shared stream: an async iterator with a bounded buffer.

    When the subscriber falls ``buffer_size`` results behind, the oldest are
    dropped and counted in :attr:`dropped`; the end of the stream (or its
    error) is always delivered.
    """

    __slots__ = ("_group", "_waiter", "_closed")

    def __init__(self, group: _Group, buffer_size: int) -> None:
        super().__init__(buffer_size, "drop_oldest")
        self._group = group
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def push(self, item: Any) -> None:
        if item is _END or isinstance(item, Exception):
            self._items.append(item)  # never dropped: the subscriber must learn the stream ended
        else:
            self.offer(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> "Member":
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.pop(0)
        if item is _END:
            self._closed = True
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self._closed = True
            raise item
        return item

    async def aclose(self) -> None:
        """Leave the group; idempotent."""
        self._closed = True
        self._group.leave(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EncodeOnce:
    """``dumps(result)``, remembered for the last result it was given.

    Every member of a group gets the same result object, one after another:
    a transport that encodes through one of these (one per app) encodes each
    event once rather than once per subscriber. Results are not changed once
    yielded (the engine makes a new one per event), so the object's identity
    is a safe key; the one it holds stays alive until the next.
    """

    __slots__ = ("_dumps", "_result", "_text")

    def __init__(self, dumps: Callable[[Any], str]) -> None:
        self._dumps = dumps
        self._result: Any = _END
        self._text = ""

    def __call__(self, result: Any) -> str:
        if result is not self._result:
            self._text = self._dumps(result)
            self._result = result
        return self._text
