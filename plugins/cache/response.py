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
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple

from plugboard.errors import ProviderError
from plugboard.graphql.operation import EncodedResult, OperationRejected
from plugboard.plugins.cache.appkeys import RUNTIME
from plugboard.plugins.cache.policy import DynamicHints, Policy, operation_policy
from plugboard.plugins.cache.stampede import CacheLock
from plugboard.plugins.cache.tags import entry_tags, plan, tags_of
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


def _variables_text(variables: dict | None, owner: str | None) -> bytes:
    # repr, not JSON: equal requests give equal text (top-level names
    # sorted; repr tells 1, 1.0, "1" and True apart), at a third of the cost.
    # Nested objects keep the client's key order, which at worst makes two
    # spellings of one request two entries, never one entry for two requests.
    return repr((sorted(variables.items()) if variables else None, owner)).encode()


def document_digest(op: "Operation") -> Any:
    """The entry key's digest of the normalised document and operation name, to be continued per request (see :func:`entry_key`)."""
    # BLAKE2 rather than SHA-256: as strong, and Python's own (no OpenSSL context to copy per request).
    return hashlib.blake2b(json.dumps((op.parsed.normalized, op.operation_name)).encode(), digest_size=20)


def entry_key(digest: Any, variables: dict | None, owner: str | None) -> str:
    """The entry's key: ``digest`` (:func:`document_digest`) continued with the variables and owner."""
    # The document's part (most of the text) is hashed once per cached
    # document; each request hashes its variables and owner on a copy.
    digest = digest.copy()
    digest.update(_variables_text(variables or None, owner))
    return "rc:" + digest.hexdigest()


def encode(body: bytes, *, max_age: int, scope: str) -> bytes:
    # No tags in the head: the store keeps them beside the entry, and a hit
    # that needs them for CDN headers reads them from the body (once per entry).
    # No ETag either: only GET needs one, computed from the body when it does.
    # Formatted rather than dumped (the rest is fixed); milliseconds are enough for Age.
    return b'{"at":%.3f,"max":%d,"scope":"%s"}\n' % (time.time(), max_age, scope.encode()) + body


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


def _on_get(op: "Operation") -> bool:
    """An HTTP GET (or HEAD): the only requests whose responses carry cache headers (POST ones are never cached by HTTP)."""
    if op.transport != "http":
        return False
    request = op.context.request
    return request is not None and request.method in ("GET", "HEAD")


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


class _Shape(NamedTuple):
    """What a response cache step knows of an operation's document, once per document."""

    parsed: Any
    tag_plan: Any
    policy: Policy
    #: The key's digest of the document and operation name (:func:`document_digest`).
    digest: Any
    #: The key of a request without variables or owner.
    plain_key: str
    #: :func:`~plugboard.plugins.cache.tags.entry_tags`' memo for this document.
    tag_memo: dict


class ResponseCache:
    """The ``cache`` step; one per app, holding the in-flight computations."""

    def __init__(self, app: "web.Application") -> None:
        self.app = app
        # key -> None while one request computes it, or the future its waiters share
        self._inflight: dict[str, asyncio.Future | None] = {}
        # (id of the parsed document, operation name) -> its _Shape
        self._shapes: dict[tuple[int, str | None], _Shape] = {}
        # entry key -> (entry, head, result): hits decode an entry once, not per request
        self._decoded: dict[str, tuple[bytes, dict, EncodedResult]] = {}
        # id(head) -> (head, sorted tags): CDN tags of entries served on GET, computed once
        self._hit_tags: dict[int, tuple[dict, list[str]]] = {}
        self._rt: "CacheRuntime | None" = None
        # (provider, its lock or None, its get_now or None, its admits or None): learnt once per provider instance
        self._provider: tuple[Any, "CacheLock | None", Any, Any] | None = None

    @property
    def rt(self) -> "CacheRuntime":
        # Read on every request, several times: kept once the app has it.
        rt = self._rt
        if rt is None:
            rt = self._rt = self.app[RUNTIME]
        return rt

    def shape(self, op: "Operation") -> "_Shape":
        """The operation's tag plan, static policy and key digest, from its view without variables; once per document.

        Without variables ``@skip(if: $x)``/``@include(if: $x)`` keep their
        fields: the policy is then taken over a superset of the fields (never
        longer, never less private) and tags are read from a superset of the
        response's keys (the same tags). Binding each request's variables
        would cost more than the rest of a cache hit.
        """
        memo_key = (id(op.parsed), op.operation_name)
        found = self._shapes.get(memo_key)
        if found is not None and found.parsed is op.parsed:
            return found
        view = op.parsed.view(op.operation_name, None) if op.variables else op.document
        policy = operation_policy(view, self.rt.hints, int(self.rt.config.query_cache.ttl))
        digest = document_digest(op)
        found = _Shape(op.parsed, plan(view.selections), policy, digest, entry_key(digest, None, None), {})
        if len(self._shapes) > 4096:
            self._shapes.clear()
        self._shapes[memo_key] = found
        return found

    def __call__(self, op: "Operation", call_next: "CallNext") -> Awaitable[Any]:
        # A plain function: what is not cached goes on without a coroutine of
        # ours, and a cached query adds one (_cached), not a chain of them.
        # Each coroutine between the request's task and the resolvers is
        # resumed at every await of the execution (a database query makes
        # several), so every level counts on a miss.
        kind = op.operation_type
        if kind != "query":
            return self._mutation(op, call_next) if kind == "mutation" else call_next(op)
        rt = self._rt
        if rt is None:
            rt = self.rt
        if not rt.config.query_cache.enabled:
            return call_next(op)
        shape = self.shape(op)
        policy = shape.policy
        owner = identity_of(op.context)
        private = policy.scope == "PRIVATE" or (owner is not None and not policy.explicit)
        if policy.max_age <= 0 or (private and owner is None):
            self._no_store(op)
            return call_next(op)
        return self._cached(op, call_next, rt, shape, owner, private)

    async def _cached(self, op: "Operation", call_next: "CallNext", rt: "CacheRuntime", shape: "_Shape", owner: str | None, private: bool) -> Any:
        variables = op.variables
        key = entry_key(shape.digest, variables, owner) if variables or private else shape.plain_key
        provider = self._provider
        if provider is None or provider[0] is not rt.cache:
            provider = self._learn(rt.cache)
        try:  # as _get(), without a coroutine of its own on every request
            # An in-process store answers without a coroutine at all (get_now).
            entry = provider[2](key) if provider[2] is not None else await rt.cache.get(key)
        except ProviderError:
            rt.response_stats.errors += 1
            entry = None
        if entry == _PRIVATE_MARKER:
            if owner is None:
                self._no_store(op)
                return await call_next(op)
            private = True
            key = entry_key(shape.digest, variables, owner)
            entry = await self._get(key)
        if entry is not None:
            hit = self._decode(key, entry)
            if hit is not None:
                rt.response_stats.hits += 1
                if provider[2] is not None:
                    # An in-process hit has awaited nothing: without this
                    # yield each request is read, looked up and answered in
                    # one go. Yielding once lets the event loop look up every
                    # ready request first and then write the answers back to
                    # back: under load (64 connections) 30% more hits per
                    # second (less CPU in our code and in the socket writes,
                    # bench/RESULTS.md), for about 10 us more on a lone request.
                    await asyncio.sleep(0)
                return self._hit(op, *hit)
        rt.response_stats.misses += 1
        # Stampede protection: the first miss computes, the others wait for it
        # (in this process here; across instances through the provider's lock).
        if key in self._inflight:
            return await self._wait(op, call_next, key)
        # A future only once someone waits (_wait): most misses have no waiter.
        self._inflight[key] = None
        stored = None
        lock = provider[1]
        locked = False
        try:
            # Across instances: the provider's lock (Redis SET NX), when it has one.
            if lock is not None:
                locked = await lock.acquire(key, rt.config.query_cache.lock_timeout)
                if locked is False:
                    stored = await lock.wait(key, rt.config.query_cache.lock_timeout)
                    hit = self._decode(key, stored) if stored is not None else None
                    if hit is not None:
                        rt.response_stats.waits += 1
                        return self._hit(op, *hit)
                    stored = None
            hints = op.context.cache_control = DynamicHints()
            result = await call_next(op)
            result, stored = await self._keep(op, rt, result, hints, shape, key, owner, private)
            return result
        finally:
            if locked:
                await lock.release(key)
            waiting = self._inflight.pop(key)
            if waiting is not None:
                waiting.set_result(stored)

    async def _wait(self, op: "Operation", call_next: "CallNext", key: str) -> Any:
        """A miss while this process computes the same key: the computation's entry, or our own after ``lock_timeout``."""
        waiting = self._inflight[key]
        if waiting is None:
            waiting = self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            stored = await asyncio.wait_for(asyncio.shield(waiting), self.rt.config.query_cache.lock_timeout)
        except asyncio.TimeoutError:
            stored = None
        if stored is not None:
            hit = self._decode(key, stored)
            if hit is not None:
                self.rt.response_stats.waits += 1
                return self._hit(op, *hit)
        self._no_store(op)
        return await call_next(op)

    def _learn(self, cache: Any) -> tuple[Any, "CacheLock | None", Any, Any]:
        # isinstance() against a runtime-checkable Protocol inspects every
        # member: once per provider instance, not per request.
        self._provider = (
            cache,
            cache if isinstance(cache, CacheLock) else None,
            getattr(cache, "get_now", None),
            getattr(cache, "admits", None),
        )
        return self._provider

    async def _get(self, key: str) -> bytes | None:
        # The Protocol's providers raise ProviderError on an outage: a miss.
        try:
            return await self.rt.cache.get(key)
        except ProviderError:
            self.rt.response_stats.errors += 1
            return None

    @staticmethod
    async def _set(rt: "CacheRuntime", key: str, value: bytes, ttl: int, tags: Any) -> None:
        try:
            await rt.cache.set(key, value, ttl=ttl, tags=tags)
        except ProviderError:
            rt.response_stats.errors += 1

    async def _keep(
        self, op: "Operation", rt: "CacheRuntime", result: Any, hints: DynamicHints, shape: "_Shape", key: str, owner: str | None, private: bool
    ) -> tuple[Any, bytes | None]:
        """Store a computed result if it may be: ``(the result to answer, the entry stored or None)``."""
        # Requests waiting for this computation (_wait) are misses of the key too.
        waited = self._inflight.get(key) is not None
        if not isinstance(result, dict) or result.get("errors") or result.get("data") is None:
            self._no_store(op)
            return result, None
        tag_plan = shape.tag_plan
        final = hints.apply(shape.policy)
        if not final.cacheable:
            self._no_store(op)
            return result, None
        if final.scope == "PRIVATE" and not private:
            # A resolver made a public-looking response private: leave a
            # marker under the public key so later callers look up their own.
            if owner is None:
                self._no_store(op)
                return result, None
            await self._set(rt, key, _PRIVATE_MARKER, final.max_age, ())
            key, private = entry_key(shape.digest, op.variables, owner), True
        scope = "PRIVATE" if private else "PUBLIC"
        admits = self._provider[3]  # learnt by _cached before it computed
        # A full store turns away a key it has not missed before: then no
        # entry and no tags are built (its next miss is stored).
        admitted = admits is None or waited or admits(key)
        op.response_headers["X-Cache"] = "MISS"
        if not admitted and not _on_get(op):
            return result, None
        # As the HTTP transport encodes it: it sends these bytes as they are.
        body = dumps_bytes(result)
        too_large = len(body) > rt.config.query_cache.max_entry_size
        if too_large:
            rt.response_stats.too_large += 1
        if too_large or not admitted:
            if _on_get(op):  # served, not stored here: HTTP caches and CDNs may still keep it
                self._http_headers(op, etag_of(body), final.max_age, scope, lambda: _sorted_tags(tag_plan, result))
            return EncodedResult(result, body), None
        # One frozenset of both kinds ("Book:1", "Book"), the same object for
        # equal responses (entry_tags): the store only indexes it; headers
        # sort a copy when a GET needs them.
        tags = entry_tags(tag_plan, result.get("data"), shape.tag_memo)
        entry = encode(body, max_age=final.max_age, scope=scope)
        await self._set(rt, key, entry, final.max_age, tags)
        rt.response_stats.stores += 1
        if _on_get(op):
            self._http_headers(op, etag_of(body), final.max_age, scope, lambda: sorted(tags))
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
        headers = op.response_headers
        headers["X-Cache"] = "HIT"
        headers["Age"] = str(age)
        if _on_get(op):
            remaining = max(0, int(head.get("max", 0)) - age)
            self._http_headers(op, _etag_of_hit(head, result), remaining, head.get("scope", "PUBLIC"), lambda: self._tags_of_hit(op, head, result))
        return result

    def _tags_of_hit(self, op: "Operation", head: dict, result: EncodedResult) -> list[str]:
        memo = self._hit_tags.get(id(head))
        if memo is not None and memo[0] is head:
            return memo[1]
        tags = head.get("tags")  # entries written before tags left the head
        if not isinstance(tags, list):
            tags = _sorted_tags(self.shape(op).tag_plan, result)
        if len(self._hit_tags) > 1024:
            self._hit_tags.clear()
        self._hit_tags[id(head)] = (head, tags)
        return tags

    def _no_store(self, op: "Operation") -> None:
        if _on_get(op):
            op.response_headers["Cache-Control"] = "no-store"

    def _http_headers(self, op: "Operation", etag: str, max_age: int, scope: str, tags: "Callable[[], list[str]]") -> None:
        """Cache-Control, ETag, CDN tags on an HTTP GET (see :func:`_on_get`); 304 when If-None-Match matches.

        ``tags`` is called only when the headers carry them (PUBLIC, with ``cdn_headers``).
        """
        headers = op.response_headers
        headers["Cache-Control"] = f"max-age={max_age}, {scope.lower()}"
        headers["ETag"] = etag
        if scope == "PUBLIC" and self.rt.config.cdn_headers:
            tag_list = tags()
            if tag_list:
                headers["Cache-Tag"] = ",".join(tag_list)
                headers["Surrogate-Key"] = " ".join(tag_list)
        if etag_matches(op.context.request.headers.get("If-None-Match"), etag):
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

