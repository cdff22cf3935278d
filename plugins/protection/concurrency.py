"""The cap on queries and mutations one client runs at once (``protection.concurrency.max``).

The client is the rate limits' identity: the API key, else the user, else
the IP (:meth:`RequestLimiter.identity_key`), so an HTTP request and an
operation on the same client's WebSocket count together. The count is per
instance (a dict in this process): an in-flight count shared through the
ratelimit service would need a lease that expires when an instance dies
mid-operation, a round trip on every start and end, and it would leak slots
on crashes; a per-instance cap already bounds what one client can hold of
each instance's workers. With N instances behind a balancer a client may run
up to N × max.

Subscriptions do not count: they are long-lived, and the realtime plugin
caps connections per IP. Over the cap: ``TOO_MANY_CONCURRENT_OPERATIONS``,
an HTTP 429 with ``Retry-After: 1``, an ``error`` for that operation on a
WebSocket (the socket stays open).
"""

from __future__ import annotations

from typing import Any, Callable

from plugboard.graphql.errors import GraphQLError

CODE = "TOO_MANY_CONCURRENT_OPERATIONS"


class TooManyConcurrent(GraphQLError):
    """A refusal whose HTTP status is 429 (the core's code table does not know this code)."""

    @property
    def http_status(self) -> int:
        return 429


class ConcurrencyLimiter:
    """In-flight queries and mutations per client key, in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: dict[str, int] = {}
        #: Queries and mutations running now, over every client.
        self.total = 0
        self.refusals = 0

    def acquire(self, key: str) -> bool:
        count = self.running.get(key, 0)
        if self.limit and count >= self.limit:
            self.refusals += 1
            return False
        self.running[key] = count + 1
        self.total += 1
        return True

    def release(self, key: str) -> None:
        self.total -= 1
        count = self.running.get(key, 0) - 1
        if count > 0:
            self.running[key] = count
        else:
            self.running.pop(key, None)


def concurrency_step(limiter: ConcurrencyLimiter, client_key: Callable[[Any], str]) -> Any:
    """The step: hold a slot of the client's for the operation's run, or refuse it."""

    async def concurrent_operations(op: Any, call_next: Any) -> Any:
        if op.operation_type == "subscription":
            return await call_next(op)
        key = client_key(op.context)
        if not limiter.acquire(key):
            raise TooManyConcurrent(
                f"Too many operations at once; at most {limiter.limit} may run concurrently per client",
                CODE,
                extensions={"maxConcurrent": limiter.limit},
                headers={"Retry-After": "1"},
            )
        try:
            return await call_next(op)
        finally:
            limiter.release(key)

    return concurrent_operations
