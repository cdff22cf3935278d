"""Every ``web.AppKey`` the core stores on the application.

Typed keys instead of strings (aiohttp warns on string keys), in one place so
a reader sees the whole of the app's shared state. Plugins define their own
keys in their own modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import redis.asyncio
    import sqlalchemy

    from plugboard.graphql.context import ContextBuilder
    from plugboard.graphql.operation import OperationRunner
    from plugboard.graphql.sdl import ComposedSchema
    from plugboard.providers.batching import Batcher
    from plugboard.providers.pubsub import PubSub

    from plugboard.core_config import CoreConfig
    from plugboard.cors import OriginPolicy
    from plugboard.graphql.engine import GraphQLEngine
    from plugboard.pluginmanager import PluginManager
    from plugboard.providers.records import RecordsStore
    from plugboard.providers.storage import FileSigner
    from plugboard.providers.registry import ProviderRegistry
    from plugboard.providers.services import Services
    from plugboard.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("plugboard.settings")
CORE_CONFIG: web.AppKey[CoreConfig] = web.AppKey("plugboard.core_config")
#: ``server.cors`` compiled: the origins allowed for CORS and for WebSocket upgrades.
CORS_POLICY: web.AppKey["OriginPolicy"] = web.AppKey("plugboard.cors_policy")
PLUGIN_MANAGER: web.AppKey[PluginManager] = web.AppKey("plugboard.plugin_manager")
#: Validated config instance per plugin name (None for plugins without settings).
PLUGIN_CONFIGS: web.AppKey[dict] = web.AppKey("plugboard.plugin_configs")
ENGINE: web.AppKey[GraphQLEngine] = web.AppKey("plugboard.engine")
PROVIDERS: web.AppKey[ProviderRegistry] = web.AppKey("plugboard.providers")
#: The named services (storage, mailer, pubsub, cache, ratelimit) the settings select.
SERVICES: web.AppKey[Services] = web.AppKey("plugboard.services")
RECORDS: web.AppKey[RecordsStore] = web.AppKey("plugboard.records")
#: The shared redis.asyncio client, or None when ``redis.url`` is not set.
REDIS: web.AppKey["redis.asyncio.Redis | None"] = web.AppKey("plugboard.redis")
#: The shared client's command batcher (None without Redis): whatever sends
#: through the shared client uses this one, so concurrent callers' commands
#: (a job's record update, its acknowledgement, its event) share round trips.
REDIS_BATCHER: web.AppKey["Batcher | None"] = web.AppKey("plugboard.redis_batcher")
#: Task functions contributed through ``plugboard_tasks``: name -> (plugin, fn).
TASKS: web.AppKey[dict] = web.AppKey("plugboard.tasks")
SCHEDULES: web.AppKey[list] = web.AppKey("plugboard.schedules")
#: Readiness checks: name -> async callable.
READY_CHECKS: web.AppKey[dict] = web.AppKey("plugboard.ready_checks")
#: Set when shutdown begins, so /readyz turns 503 while in-flight requests finish.
SHUTTING_DOWN: web.AppKey[dict] = web.AppKey("plugboard.shutting_down")
RUNNER: web.AppKey["OperationRunner"] = web.AppKey("plugboard.runner")
CONTEXT_BUILDER: web.AppKey["ContextBuilder"] = web.AppKey("plugboard.context_builder")
#: The composed schema (SDL text, fragments and field owners).
COMPOSED_SCHEMA: web.AppKey["ComposedSchema"] = web.AppKey("plugboard.composed_schema")
#: Records-store metadata that plugins add tables to.
METADATA: web.AppKey["sqlalchemy.MetaData"] = web.AppKey("plugboard.metadata")
#: What each plugin contributed, for `plugboard check` and the inspect endpoint.
CONTRIBUTIONS: web.AppKey[dict] = web.AppKey("plugboard.contributions")
#: Transports contributed through ``plugboard_transports``, in plugin order.
TRANSPORTS: web.AppKey[list] = web.AppKey("plugboard.transports")
#: ``plugboard_upload_rules``: field coordinate -> [(coordinate, UploadRules)], for the multipart transport.
UPLOAD_RULES: web.AppKey[dict] = web.AppKey("plugboard.upload_rules")
#: The running pubsub provider (see plugboard.providers.pubsub), when a plugin provides one.
PUBSUB: web.AppKey["PubSub"] = web.AppKey("plugboard.pubsub")
#: Signs and checks the download URLs of locally stored files (see plugboard.providers.storage).
FILE_SIGNER: web.AppKey["FileSigner"] = web.AppKey("plugboard.file_signer")
