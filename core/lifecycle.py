"""Start-up and shutdown as aiohttp cleanup contexts.

Each stage is one ``cleanup_ctx`` entry (set up before ``yield``, torn down
after, in reverse order), so a failure part-way through start-up tears down
exactly what was set up, and nothing is left running.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from plugboard import keys
from plugboard.errors import SchemaError
from plugboard.graphql.sdl import locate_fields
from plugboard.providers.batching import Batcher
from plugboard.providers.records import SQLRecordsStore
from plugboard.providers.redis import close_redis, connect_redis

logger = logging.getLogger("plugboard")


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable (hooks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.REDIS] = client = await connect_redis(app[keys.CORE_CONFIG].redis)
    app[keys.REDIS_BATCHER] = batcher = Batcher(client) if client is not None else None
    yield
    if batcher is not None:
        await batcher.aclose()
    await close_redis(app[keys.REDIS])


async def records_ctx(app: web.Application) -> AsyncIterator[None]:
    core = app[keys.CORE_CONFIG]
    store = SQLRecordsStore(
        core.records.url,
        data_dir=app[keys.SETTINGS].root / core.server.data_dir,
        echo=core.records.echo,
        pool_size=core.records.pool_size,
        metadata=app[keys.METADATA],
    )
    await store.start()
    app[keys.RECORDS] = store
    yield
    await store.close()


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[keys.ENGINE]
    try:
        await engine.cook()
    except SchemaError as e:
        # Tartiflette names the field, not where it came from: add that.
        raise SchemaError(locate_fields(str(e), app[keys.COMPOSED_SCHEMA])) from e
    try:
        yield
    finally:
        engine.drop()


async def providers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The named services start here; every provider (theirs and plugins') closes here."""
    registry = app[keys.PROVIDERS]
    services = app[keys.SERVICES]
    try:
        await services.start(registry, app)
    except BaseException:
        # Nothing is left running when one service cannot start.
        await registry.close_all()
        raise
    app[keys.PUBSUB] = services.get("pubsub")
    yield
    # Plugins' lifespans (after this entry) create providers too, so every
    # provider is closed after those lifespans have finished with them.
    await registry.close_all()
    services.stopped()


def plugin_lifespan_ctx(plugin: str, gen_factory: Callable[[], Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gen = gen_factory()
        if not inspect.isasyncgen(gen):
            raise TypeError(f"plugin {plugin!r}: plugboard_lifespan must be an async generator")
        await gen.__anext__()
        yield
        try:
            await gen.__anext__()
        except StopAsyncIteration:
            pass
        else:
            logger.warning("plugin %r: plugboard_lifespan yielded more than once", plugin)

    return ctx


async def hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    pm = app[keys.PLUGIN_MANAGER]
    configs = app[keys.PLUGIN_CONFIGS]
    for _plugin, result in pm.call_each("plugboard_startup", app=app, configs=configs):
        await await_me_maybe(result)
    yield
    for _plugin, result in pm.call_each("plugboard_shutdown", app=app, configs=configs, reverse=True):
        await await_me_maybe(result)
