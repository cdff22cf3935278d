"""The response cache (the seed's "query caching"): an operation step on every transport.

Queries only: mutations run and then invalidate what they returned
(:mod:`plugboard.plugins.cache.invalidation`); subscriptions pass through.
An entry is keyed by the normalised document, the operation name, the
variables and the scope: ``PUBLIC`` entries are shared by every caller,
``PRIVATE`` ones belong to one identity (``context.identity``, or an API key
as ``context.api_key``) and are never stored for an anonymous caller. A
response with errors is never stored. One computation per key at a time:
concurrent misses in a process wait for the first, and with a provider that
locks across instances (Redis, :mod:`.stampede`) so do other instances' for a
bounded time (``queryCache.lock_timeout``), after which they compute.

HTTP GET responses carry ``Cache-Control`` from the policy, an ``ETag``, the
tags as ``Cache-Tag``/``Surrogate-Key`` for CDNs, and a matching
``If-None-Match`` is answered ``304 Not Modified``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from plugboard.errors import ProviderError
from plugboard.graphql.operation import EncodedResult, OperationRejected
from plugboard.plugins.cache.appkeys import RUNTIME
from plugboard.plugins.cache.policy import DynamicHints, Policy, operation_policy
from plugboard.plugins.cache.stampede import CacheLock
from plugboard.plugins.cache.tags import plan, tags_of
from plugboard.transports.http import dumps_bytes

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.graphql.operation import CallNext, Operation
    from plugboard.plugins.cache.runtime import CacheRuntime

logger = logging.getLogger("plugboard.cache")

#: Stored in place of a public entry when a resolver made the response private at run time.
_PRIVATE_MARKER = b'{"private":1}\n'


def identity_of(context: Any) -> str | None:
    """Who a PRIVATE entry belongs to, or None for an anonymous caller."""
    identity = getattr(context, "identity", None)
    api_key = getattr(context, "api_key", None)
    if identity is None and api_key is None:
        return None
    return repr((identity, api_key, getattr(context, "subscription_group", None)))


# Built once: json.dumps with any option builds a new encoder per call.
_key_text = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode


def entry_key(op: "Operation", owner: str | None) -> str:
    """The entry's key: a digest of the normalised document, operation name, variables and owner."""
    # The document's part is hashed once per cached document (it is most of
    # the text); each request hashes only its variables and owner on a copy,
    # and a request with neither (most hits) reuses the document's own key.
    derived = op.parsed.derived
    memo = derived.get(("cache.key", op.operation_name))
    if memo is None:
        base = hashlib.sha256(_key_text((op.parsed.normalized, op.operation_name)).encode())
        plain = base.copy()
        plain.update(_key_text((None, None)).encode())
        memo = derived[("cache.key", op.operation_name)] = (base, "rc:" + plain.hexdigest()[:40])
    variables = op.variables or None
    if variables is None and owner is None:
        return memo[1]
    digest = memo[0].copy()
    digest.update(_key_text((variables, owner)).encode())
    return "rc:" + digest.hexdigest()[:40]


def encode(body: bytes, *, max_age: int, scope: str) -> bytes:
    # No tags in the head: the store keeps them beside the entry, and a hit
    # that needs them for CDN headers reads them from the body (once per entry).
    # No ETag either: only GET needs one, computed from the body when it does.
    # Formatted rather than dumped: a float's repr is JSON, the rest is fixed.
    return b'{"at":%r,"max":%d,"scope":"%s"}\n' % (time.time(), max_age, scope.encode()) + body


def decode(entry: bytes) -> tuple[dict, bytes] | None:
    head, sep, body = entry.partition(b"\n")
    if not sep:
        return None
    try:
        return json.loads(head), body
    except ValueError:
        return None


def _sorted_tags(tag_plan: Any, result: Any) -> list[str]:
    entities, types = tags_of(tag_plan, result.get("data"))
    return sorted(entities) + sorted(types)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _etag_of_hit(head: dict, result: EncodedResult) -> str:
    # Once per decoded entry (the head is memoised with it); entries written
    # before the ETag left the head still carry theirs.
    etag = head.get("etag")
    if not etag:
        etag = head["etag"] = etag_of(result.encoded)
    return etag


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class ResponseCache:
    """The ``cache`` step; one per app, holding the in-flight computations."""

    def __init__(self, app: "web.Application") -> None:
        self.app = app
        self._inflight: dict[str, asyncio.Future] = {}
        # (parsed document, operation name) -> (document, its tag plan, policy)
        self._shapes: dict[tuple[int, str | None], tuple[Any, Any, Policy]] = {}
        # entry key -> (entry, head, result): hits decode an entry once, not per request
        self._decoded: dict[str, tuple[bytes, dict, EncodedResult]] = {}
        # id(head) -> (head, sorted tags): CDN tags of entries served on GET, computed once
        self._hit_tags: dict[int, tuple[dict, list[str]]] = {}
        self._rt: "CacheRuntime | None" = None
        self._locks: tuple[Any, "CacheLock | None"] | None = None

    @property
    def rt(self) -> "CacheRuntime":
        # Read on every request, several times: kept once the app has it.
        rt = self._rt
        if rt is None:
            rt = self._rt = self.app[RUNTIME]
        return rt

    def shape(self, op: "Operation") -> tuple[Any, Policy]:
        """The operation's tag plan and static policy, from its view without variables; once per document.

        Without variables ``@skip(if: $x)``/``@include(if: $x)`` keep their
        fields: the policy is then taken over a superset of the fields (never
        longer, never less private) and tags are read from a superset of the
        response's keys (the same tags). Binding each request's variables
        would cost more than the rest of a cache hit.
        """
        memo_key = (id(op.parsed), op.operation_name)
        found = self._shapes.get(memo_key)
        if found is not None and found[0] is op.parsed:
            return found[1], found[2]
        view = op.parsed.view(op.operation_name, None) if op.variables else op.document
        policy = operation_policy(view, self.rt.hints, int(self.rt.config.query_cache.ttl))
        tag_plan = plan(view.selections)
        if len(self._shapes) > 4096:
            self._shapes.clear()
        self._shapes[memo_key] = (op.parsed, tag_plan, policy)
        return tag_plan, policy

    async def __call__(self, op: "Operation", call_next: "CallNext") -> Any:
        if op.operation_type != "query":
            if op.operation_type == "mutation":
                return await self._mutation(op, call_next)
            return await call_next(op)
        if not self.rt.config.query_cache.enabled:
            return await call_next(op)
        tag_plan, policy = self.shape(op)
        owner = identity_of(op.context)
        if not policy.cacheable:
            return await self._uncached(op, call_next)
        private = policy.scope == "PRIVATE" or (owner is not None and not policy.explicit)
        if private and owner is None:
            return await self._uncached(op, call_next)
        key = entry_key(op, owner if private else None)
        entry = await self._get(key)
        if entry == _PRIVATE_MARKER:
            if owner is None:
                return await self._uncached(op, call_next)
            private = True
            key = entry_key(op, owner)
            entry = await self._get(key)
        if entry is not None:
            hit = self._decode(key, entry)
            if hit is not None:
                self.rt.response_stats.hits += 1
                return self._hit(op, *hit)
        self.rt.response_stats.misses += 1
        # Stampede protection: the first miss computes, the others wait for it
        # (in this process here; across instances through the provider's lock).
        waiting = self._inflight.get(key)
        if waiting is not None:
            try:
                stored = await asyncio.wait_for(asyncio.shield(waiting), self.rt.config.query_cache.lock_timeout)
            except asyncio.TimeoutError:
                stored = None
            if stored is not None:
                hit = self._decode(key, stored)
                if hit is not None:
                    self.rt.response_stats.waits += 1
                    return self._hit(op, *hit)
            return await self._uncached(op, call_next)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        stored = None
        locked = False
        try:
            # Across instances: the provider's lock (Redis SET NX), when it has one.
            if self._lock is not None:
                locked = await self._lock.acquire(key, self.rt.config.query_cache.lock_timeout)
                if locked is False:
                    stored = await self._lock.wait(key, self.rt.config.query_cache.lock_timeout)
                    hit = self._decode(key, stored) if stored is not None else None
                    if hit is not None:
                        self.rt.response_stats.waits += 1
                        return self._hit(op, *hit)
                    stored = None
            result, stored = await self._compute(op, call_next, tag_plan, policy, key, owner, private)
            return result
        finally:
            if locked:
                await self._lock.release(key)
            del self._inflight[key]
            future.set_result(stored)

    @property
    def _lock(self) -> "CacheLock | None":
        # isinstance() against a runtime-checkable Protocol inspects every
        # member: once per provider instance, not per miss.
        cache = self.rt.cache
        if self._locks is None or self._locks[0] is not cache:
            self._locks = (cache, cache if isinstance(cache, CacheLock) else None)
        return self._locks[1]

    async def _get(self, key: str) -> bytes | None:
        # The Protocol's providers raise ProviderError on an outage: a miss.
        try:
            return await self.rt.cache.get(key)
        except ProviderError:
            self.rt.response_stats.errors += 1
            return None

    async def _set(self, key: str, value: bytes, ttl: int, tags: Any) -> None:
        try:
            await self.rt.cache.set(key, value, ttl=ttl, tags=tags)
        except ProviderError:
            self.rt.response_stats.errors += 1

    async def _uncached(self, op: "Operation", call_next: "CallNext") -> Any:
        result = await call_next(op)
        self._http_headers(op, None, policy=None)
        return result

    async def _compute(
        self, op: "Operation", call_next: "CallNext", tag_plan: Any, policy: Policy, key: str, owner: str | None, private: bool
    ) -> tuple[Any, bytes | None]:
        hints = DynamicHints()
        op.context.cache_control = hints
        result = await call_next(op)
        if not isinstance(result, dict) or result.get("errors") or result.get("data") is None:
            self._http_headers(op, None, policy=None)
            return result, None
        final = hints.apply(policy)
        if not final.cacheable:
            self._http_headers(op, None, policy=None)
            return result, None
        if final.scope == "PRIVATE" and not private:
            # A resolver made a public-looking response private: leave a
            # marker under the public key so later callers look up their own.
            if owner is None:
                self._http_headers(op, None, policy=None)
                return result, None
            await self._set(key, _PRIVATE_MARKER, final.max_age, ())
            key, private = entry_key(op, owner), True
        scope = "PRIVATE" if private else "PUBLIC"
        # As the HTTP transport encodes it: it sends these bytes as they are.
        body = dumps_bytes(result)
        etag = functools.partial(etag_of, body)
        if len(body) > self.rt.config.query_cache.max_entry_size:
            self.rt.response_stats.too_large += 1
            self._http_headers(op, (etag, final.max_age, scope, lambda: _sorted_tags(tag_plan, result)), policy=final)
            return result, None
        # One set of both kinds ("Book:1", "Book"), unsorted: the store only
        # indexes it; headers sort their copy when a GET needs them.
        tags = tags_of(tag_plan, result.get("data"), merged=True)
        entry = encode(body, max_age=final.max_age, scope=scope)
        await self._set(key, entry, final.max_age, tags)
        self.rt.response_stats.stores += 1
        op.response_headers["X-Cache"] = "MISS"
        self._http_headers(op, (etag, final.max_age, scope, lambda: sorted(tags)), policy=final)
        return EncodedResult(result, body), entry

    def _decode(self, key: str, entry: bytes) -> tuple[dict, EncodedResult] | None:
        memo = self._decoded.get(key)
        if memo is not None and (memo[0] is entry or memo[0] == entry):
            return memo[1], memo[2]
        decoded = decode(entry)
        if decoded is None:
            return None
        head, body = decoded
        try:
            result = EncodedResult(json.loads(body), body)
        except ValueError:
            return None
        if len(self._decoded) > 1024:
            self._decoded.clear()
        self._decoded[key] = (entry, head, result)
        return head, result

    def _hit(self, op: "Operation", head: dict, result: EncodedResult) -> Any:
        # The same result object serves every hit on this entry: transports
        # only read it (a step that changes results copies, see EncodedResult).
        age = max(0, int(time.time() - head.get("at", 0)))
        remaining = max(0, int(head.get("max", 0)) - age)
        op.response_headers["X-Cache"] = "HIT"
        op.response_headers["Age"] = str(age)
        self._http_headers(
            op, (lambda: _etag_of_hit(head, result), remaining, head.get("scope", "PUBLIC"), lambda: self._tags_of_hit(op, head, result)), policy=True
        )
        return result

    def _tags_of_hit(self, op: "Operation", head: dict, result: EncodedResult) -> list[str]:
        memo = self._hit_tags.get(id(head))
        if memo is not None and memo[0] is head:
            return memo[1]
        tags = head.get("tags")  # entries written before tags left the head
        if not isinstance(tags, list):
            tags = _sorted_tags(self.shape(op)[0], result)
        if len(self._hit_tags) > 1024:
            self._hit_tags.clear()
        self._hit_tags[id(head)] = (head, tags)
        return tags

    def _http_headers(self, op: "Operation", meta: "tuple[Callable[[], str], int, str, Callable[[], list[str]]] | None", *, policy: Any) -> None:
        """Cache-Control, ETag, CDN tags on HTTP GET; 304 when If-None-Match matches.

        ``meta`` is ``(etag, max_age, scope, tags)``, where ``etag`` and
        ``tags`` are called only when the headers carry them (GET; tags when
        PUBLIC with ``cdn_headers``): a POST never pays for them.
        """
        request = op.context.request
        if op.transport != "http" or request is None or request.method not in ("GET", "HEAD"):
            return
        headers = op.response_headers
        if meta is None:
            headers["Cache-Control"] = "no-store"
            return
        etag_fn, max_age, scope, tags = meta
        etag = etag_fn()
        headers["Cache-Control"] = f"max-age={max_age}, {scope.lower()}"
        if etag:
            headers["ETag"] = etag
        if scope == "PUBLIC" and self.rt.config.cdn_headers:
            tags = tags()
            if tags:
                headers["Cache-Tag"] = ",".join(tags)
                headers["Surrogate-Key"] = " ".join(tags)
        if etag and etag_matches(request.headers.get("If-None-Match"), etag):
            # The transport answers a request-level status with these headers
            # and no body (aiohttp sends none with a 304).
            raise OperationRejected("not modified", 304, errors=[], headers=dict(headers))

    async def _mutation(self, op: "Operation", call_next: "CallNext") -> Any:
        result = await call_next(op)
        data = result.get("data") if isinstance(result, dict) else None
        if data:
            from plugboard.plugins.cache.tags import mutation_tags

            tags = mutation_tags(op.document.selections, data)
            if tags:
                await self.rt.invalidate(tags)
        return result

