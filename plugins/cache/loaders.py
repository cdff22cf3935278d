"""Per-request DataLoaders: ``context.loaders.get(batch_fn)`` (aiodataloader's shape, our code).

A loader collects the keys asked for in one turn of the event loop and calls
``batch_fn(keys, context)`` once for all of them; results are memoised for
the rest of the request. Plugboard resolves list items one after another
(``graphql.coerce_list_concurrently: false``, faster for most lists), so the
resolver that produced the parents says which keys are coming with
:meth:`DataLoader.want`; the first ``load`` then fetches them all::

    async def books_by_author(author_ids, context):    # one query for all
        ...
        return [books_of[i] for i in author_ids]

    async def resolve_authors(parent, args, context, info):
        authors = await fetch_authors()
        context.loaders.get(books_by_author).want(a["id"] for a in authors)
        return authors

    async def resolve_author_books(author, args, context, info):
        return await context.loaders.get(books_by_author).load(author["id"])

aiodataloader was considered: it batches only what concurrent resolvers ask
for in the same tick, which sequential list resolution never does, and it
has no ``want``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Awaitable, Callable, Hashable, Iterable, Sequence

BatchFn = Callable[[list[Any], Any], Awaitable[Sequence[Any]]]


def _weak(context: Any) -> Callable[[], Any]:
    """A callable returning ``context``: a weak reference where the object allows one."""
    if isinstance(context, weakref.ref):
        return context
    try:
        return weakref.ref(context)
    except TypeError:  # None, or a plain dict in a test: no Context to keep alive
        return lambda: context


class DataLoader:
    """Batches and memoises ``load(key)`` calls of one request for one batch function."""

    def __init__(self, batch_fn: BatchFn, context: Any, *, max_batch_size: int = 1000) -> None:
        self._batch_fn = batch_fn
        # A weak reference: the context holds the loaders, and a strong one
        # back would make every request (its aiohttp Request, streams, the
        # context) a reference cycle, freed only by the garbage collector;
        # that cost about 5% of the books query's throughput in collections.
        self._context = _weak(context)
        self._max = max_batch_size
        self._memo: dict[Hashable, asyncio.Future] = {}
        self._queue: list[tuple[Hashable, asyncio.Future]] = []
        self._wanted: dict[Hashable, None] = {}
        self._scheduled = False
        #: Calls of the batch function so far (for tests and tracing).
        self.batches = 0

    def want(self, keys: Iterable[Hashable]) -> None:
        """Add ``keys`` to the next batch, if one comes: nothing is fetched until some ``load``."""
        for key in keys:
            if key not in self._memo:
                self._wanted[key] = None

    def prime(self, key: Hashable, value: Any) -> None:
        """Memoise a value already known (from a join, say)."""
        if key not in self._memo:
            future = asyncio.get_running_loop().create_future()
            future.set_result(value)
            self._memo[key] = future

    async def load(self, key: Hashable) -> Any:
        return await self._future(key)

    async def load_many(self, keys: Iterable[Hashable]) -> list[Any]:
        return list(await asyncio.gather(*(self._future(k) for k in keys)))

    def _future(self, key: Hashable) -> asyncio.Future:
        future = self._memo.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._memo[key] = loop.create_future()
            self._queue.append((key, future))
            if self._wanted:
                wanted, self._wanted = self._wanted, {}
                for other in wanted:
                    if other not in self._memo:
                        self._memo[other] = loop.create_future()
                        self._queue.append((other, self._memo[other]))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self._max):
            asyncio.ensure_future(self._run(queue[start : start + self._max]))

    async def _run(self, batch: list[tuple[Hashable, asyncio.Future]]) -> None:
        self.batches += 1
        try:
            values = await self._batch_fn([k for k, _ in batch], self._context())
            if len(values) != len(batch):
                raise ValueError(f"the batch function returned {len(values)} values for {len(batch)} keys")
        except Exception as e:
            for key, future in batch:
                self._memo.pop(key, None)  # a later request may retry it
                if not future.done():
                    future.set_exception(e)
            return
        for (_key, future), value in zip(batch, values):
            if not future.done():
                future.set_result(value)


class Loaders:
    """The request's loaders, one per batch function (``context.loaders``)."""

    def __init__(self, context: Any) -> None:
        self._context = _weak(context)  # see DataLoader: no cycle through the context
        self._loaders: dict[Any, DataLoader] = {}

    def get(self, batch_fn: BatchFn, **options: Any) -> DataLoader:
        loader = self._loaders.get(batch_fn)
        if loader is None:
            loader = self._loaders[batch_fn] = DataLoader(batch_fn, self._context, **options)
        return loader
