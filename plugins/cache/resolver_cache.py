"""The resolver cache (the seed's "database query caching"): ``@cached`` for resolvers and provider calls.

::

    from plugboard.plugins.cache import cached

    @cached(ttl=300, tags=lambda book, *a, **k: [f"Book:{book['id']}"] if book else ["Book"])
    async def resolve_book(parent, args, context, info): ...

    @cached(ttl=60, key=lambda app, isbn: isbn, tags=["Isbn"])
    async def lookup_isbn(app, isbn): ...

The store is the app's cache service, found through the call's ``context``
(a resolver's third argument, or an argument named ``context``) or an
argument named ``app``; with no cache plugin running the function is simply
called. Values go through JSON (datetimes survive), so an entry written by
one instance reads the same on another. ``ttl`` defaults to
``cache.redis.ttl``; ``tags`` is a list or a callable of ``(result, *args,
**kwargs)``, and those tags are invalidated with everything else (mutations,
``invalidate(app, tags)``, ``invalidateCache``). A backend failure means the
function runs uncached.
"""

from __future__ import annotations

import contextlib

import datetime as dt
import functools
import hashlib
import inspect
import json
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from plugboard.errors import ProviderError
from plugboard.plugins.cache.appkeys import RUNTIME
from plugboard.plugins.cache.tags import check_tags

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_SKIP = frozenset({"context", "info", "app"})


def cached(
    ttl: float | None = None,
    *,
    key: Callable[..., Any] | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
) -> Callable[[F], F]:
    """Cache an async function's results in the app's cache service (see the module doc)."""
    if not isinstance(tags, (list, tuple, set, frozenset)) and not callable(tags):
        raise TypeError("tags must be a list of strings or a callable returning one")
    static_tags = None if callable(tags) else check_tags(tags)

    def decorate(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@cached needs an async def function, not {fn!r}")
        signature = inspect.signature(fn)
        name = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            runtime = _runtime(bound.arguments)
            if runtime is None:
                return await fn(*args, **kwargs)
            if key is not None:
                parts = key(*args, **kwargs)
            else:
                parts = {n: v for n, v in bound.arguments.items() if n not in _SKIP}
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:40]
            entry_key = f"fn:{name}:{digest}"
            cache = runtime.cache
            try:
                raw = await cache.get(entry_key)
            except ProviderError:  # an outage: run uncached
                raw = None
            if raw is not None:
                try:
                    return loads(raw)
                except ValueError:  # an entry not written by us (or truncated): a miss, overwritten below
                    raw = None
            value = await fn(*args, **kwargs)
            admits = getattr(cache, "admits", None)
            if admits is not None and not admits(entry_key):
                return value  # a full store's first miss of this key (see the Cache Protocol)
            entry_tags = check_tags(tags(value, *args, **kwargs)) if static_tags is None else static_tags
            # An outage: the value is still returned, only not stored.
            with contextlib.suppress(ProviderError):
                await cache.set(entry_key, dumps(value), ttl=runtime.config.redis.ttl if ttl is None else ttl, tags=entry_tags)
            return value

        return wrapper  # type: ignore[return-value]

    return decorate


def _runtime(arguments: dict[str, Any]) -> Any:
    context = arguments.get("context")
    app = getattr(context, "app", None) if context is not None else arguments.get("app")
    if app is None:
        return None
    try:
        return app.get(RUNTIME)
    except AttributeError:
        return None


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"@cached cannot store a {type(value).__name__}")


def _decode(obj: dict) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return dt.datetime.fromisoformat(obj["$datetime"])
        if "$date" in obj:
            return dt.date.fromisoformat(obj["$date"])
    return obj


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_encode).encode()


def loads(raw: bytes) -> Any:
    return json.loads(raw, object_hook=_decode)
