"""Every ``web.AppKey`` the core stores on the application.

Typed keys instead of strings (aiohttp warns on string keys), in one place so
a reader sees the whole of the app's shared state. Plugins define their own
keys in their own modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import redis.asyncio

    from plugboard.core_config import CoreConfig
    from plugboard.graphql.engine import GraphQLEngine
    from plugboard.pluginmanager import PluginManager
    from plugboard.providers.records import RecordsStore
    from plugboard.providers.registry import ProviderRegistry
    from plugboard.settings import Settings

SETTINGS = web.AppKey("plugboard.settings", "Settings")
CORE_CONFIG = web.AppKey("plugboard.core_config", "CoreConfig")
PLUGIN_MANAGER = web.AppKey("plugboard.plugin_manager", "PluginManager")
#: Validated config instance per plugin name (None for plugins without settings).
PLUGIN_CONFIGS = web.AppKey("plugboard.plugin_configs", dict)
ENGINE = web.AppKey("plugboard.engine", "GraphQLEngine")
PROVIDERS = web.AppKey("plugboard.providers", "ProviderRegistry")
RECORDS = web.AppKey("plugboard.records", "RecordsStore")
#: The shared redis.asyncio client, or None when ``redis.url`` is not set.
REDIS = web.AppKey("plugboard.redis", object)
#: Task functions contributed through ``plugboard_tasks``: name -> (plugin, fn).
TASKS = web.AppKey("plugboard.tasks", dict)
SCHEDULES = web.AppKey("plugboard.schedules", list)
#: Readiness checks: name -> async callable.
READY_CHECKS = web.AppKey("plugboard.ready_checks", dict)
#: Set when shutdown begins, so /readyz turns 503 while in-flight requests finish.
SHUTTING_DOWN = web.AppKey("plugboard.shutting_down", dict)
RUNNER = web.AppKey("plugboard.runner", object)
CONTEXT_BUILDER = web.AppKey("plugboard.context_builder", object)
#: The composed schema (SDL text, fragments and field owners).
COMPOSED_SCHEMA = web.AppKey("plugboard.composed_schema", object)
#: Records-store metadata that plugins add tables to.
METADATA = web.AppKey("plugboard.metadata", object)
#: What each plugin contributed, for `plugboard check` and the inspect endpoint.
CONTRIBUTIONS = web.AppKey("plugboard.contributions", dict)
#: Transports contributed through ``plugboard_transports``, in plugin order.
TRANSPORTS = web.AppKey("plugboard.transports", list)
#: The running pubsub provider (see plugboard.providers.pubsub), when a plugin provides one.
PUBSUB = web.AppKey("plugboard.pubsub", object)
