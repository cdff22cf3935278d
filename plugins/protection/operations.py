"""The request policies and ``@rateLimit`` inside the operation lifecycle, where the identity is known.

Run by the plugin's one operation step (:func:`.cost.operation_steps`). It counts:

- the operation under its caller's policy (API key, user, else IP) when the
  middleware deferred the request (it carried credentials) and for every
  operation on a WebSocket (one upgrade carries many);
- each ``@rateLimit`` field the operation selects (:mod:`.directive`).

A refusal is a :class:`~plugboard.graphql.errors.GraphQLError` with
``RATE_LIMITED``: the HTTP transport answers 429 with its headers, the
WebSocket transports an ``error`` message for the operation.
"""

from __future__ import annotations

import collections
from typing import Any

from plugboard.plugins.protection.directive import FieldLimit
from plugboard.plugins.protection.limiter import DEFERRED, STATE, Policy, RequestLimiter, has_credentials, identity_id, merge_header, ratelimit_header

#: The limited selections of this many documents (with their variables) are kept.
CACHE_SIZE = 1024


class FieldLimits:
    """The ``@rateLimit`` fields an operation selects, found once per document, name and variables."""

    def __init__(self, limits: dict[str, FieldLimit], key: Any) -> None:
        self.limits = limits
        self.policies = {c: Policy(c, f.max, f.window) for c, f in limits.items()}
        self._key = key
        self._cache: collections.OrderedDict[Any, tuple[FieldLimit, ...]] = collections.OrderedDict()

    def selected(self, op: Any) -> tuple[FieldLimit, ...]:
        key = self._key(op)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        limits = self.limits
        found = tuple(limits[sel.coordinate] for sel, _depth, _path in op.document.walk() if sel.coordinate in limits)
        self._cache[key] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found


def _subject(limiter: RequestLimiter, context: Any, per: str) -> str:
    # per KEY without a key is USER; per USER without an identity is IP.
    if per == "KEY":
        api_key = getattr(context, "api_key", None)
        if api_key is not None:
            return f"key:{api_key.id}"
    if per in ("KEY", "USER"):
        user = identity_id(context)
        if user is not None:
            return f"user:{user}"
    return limiter.client_key(context.request)


class RequestChecks:
    """The request policy and ``@rateLimit`` checks of one operation, run by the plugin's step.

    :meth:`before` counts (or refuses); it returns what :meth:`after` needs
    when the count waits for the outcome (skipFailedRequests), else None.
    """

    def __init__(self, limiter: RequestLimiter, fields: FieldLimits | None, *, requests_enabled: bool) -> None:
        self.limiter = limiter
        self.fields = fields
        self.requests_enabled = requests_enabled
        self.skip_failed = limiter.config.requests.skip_failed_requests

    def counts(self, op: Any) -> bool:
        """Whether :meth:`before` has anything to count for this operation."""
        request = getattr(op.context, "request", None)
        if request is None:
            return False
        return self.fields is not None or (self.requests_enabled and (op.transport == "ws" or _deferred(request)))

    async def before(self, op: Any) -> tuple[Policy, str] | None:
        limiter = self.limiter
        context = op.context
        request = getattr(context, "request", None)
        if request is None:
            # The server's own operations (a job running a query): no client to limit.
            return None
        counted: tuple[Policy, str] | None = None
        if self.requests_enabled and (op.transport == "ws" or _deferred(request)):
            policy, key = limiter.subject(context)
            # skipFailedRequests on an HTTP request: look now, count once it succeeded.
            look = self.skip_failed and op.transport != "ws"
            state = await limiter.count(key, peek=True, limit=policy.max, window=policy.window) if look else await limiter.count_operation(key, policy)
            if state is not None:
                if op.transport != "ws":
                    # Counted by its identity (refused included): the middleware will not count the address.
                    request[STATE] = (policy, state)
                    counted = (policy, key) if look else None
                if not state.allowed:
                    raise limiter.refused(policy, state)
        if self.fields is not None:
            await self._fields(op, context)
        return counted

    async def _fields(self, op: Any, context: Any) -> None:
        limiter, fields = self.limiter, self.fields
        for limit in fields.selected(op):
            policy = fields.policies[limit.coordinate]
            state = await limiter.count_operation(f"field:{limit.coordinate}:{_subject(limiter, context, limit.per)}", policy)
            if state is None:
                continue
            if not state.allowed:
                raise limiter.refused(policy, state, f"Too many requests for {limit.coordinate}; retry later", field=limit.coordinate)
            merge_header(op.response_headers, "RateLimit-Policy", policy.header)
            merge_header(op.response_headers, "RateLimit", ratelimit_header(policy.name, state))

    async def after(self, op: Any, counted: tuple[Policy, str], result: Any) -> None:
        if _failed(result):
            return
        policy, key = counted
        state = await self.limiter.count_operation(key, policy)
        if state is not None:
            op.context.request[STATE] = (policy, state)


def _failed(result: Any) -> bool:
    errors = result.get("errors") if isinstance(result, dict) else getattr(result, "errors", None)
    return bool(errors)


def _deferred(request: Any) -> bool:
    """Whether the middleware left this request's count to its identity (it carries credentials)."""
    # Credentials first: ``in request`` on a key it lacks raises and catches a
    # KeyError inside aiohttp's Mapping, on every anonymous request.
    return has_credentials(request) and DEFERRED in request
