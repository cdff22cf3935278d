"""``create_app(settings)``: the only composition root.

Everything an app uses is built here from settings, in one pass that collects
every problem before failing: the declared plugins, their validated configs,
the composed schema and its resolvers, routes, middleware, context and
operation steps. I/O (Redis, the records store, cooking the engine, plugin
lifespans) happens later, in the app's cleanup contexts. Two apps built in one
process share nothing.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import sqlalchemy
from aiohttp import web

from plugboard import builtin_hooks, cors, keys
from plugboard.config import structure
from plugboard.core_config import CORE_SECTIONS, CoreConfig
from plugboard.errors import ConfigError, ConfigProblem, PlugboardError, PluginLoadError, SchemaError
from plugboard.graphql import sdl
from plugboard.graphql.context import ContextBuilder
from plugboard.graphql.engine import Contribution, EngineOptions, GraphQLEngine
from plugboard.graphql.operation import OperationRunner
from plugboard.graphql.persisted import PersistedQueryStore
from plugboard.graphql.shared_streams import SharedStreams
from plugboard import lifecycle
from plugboard.middleware import collect_middleware, echo_request_id, request_id_middleware
from plugboard.pluginmanager import PluginManager, build_plugin_manager, installed_plugins
from plugboard.providers.registry import ProviderRegistry, ProviderSpec
from plugboard.providers.services import SECTION as SERVICES_SECTION, Services, declare_services
from plugboard.settings import Settings
from plugboard.transports import routes as core_routes
from plugboard.transports import upload_rules


def create_app(settings: Settings, *, plugins: Iterable[Any] = ()) -> web.Application:
    """Build an application from settings; raise a PlugboardError naming every problem.

    :param settings: loaded settings (``Settings.load(root)`` or ``Settings.from_mapping``).
    :param plugins: extra plugin objects registered after the declared ones
        (tests and embedding applications).
    """
    entries = settings.plugin_entries()
    pm = build_plugin_manager([e.name for e in entries if e.enabled], plugins, builtin=builtin_hooks)
    registry, provided = _register_providers(pm)
    core_config, configs, services = _validate_configs(settings, pm, registry, disabled={e.name for e in entries if not e.enabled})

    app = web.Application(
        middlewares=[request_id_middleware],
        client_max_size=core_config.graphql.max_body_size,
        handler_args={"max_field_size": 16 * 1024},
    )
    app.on_response_prepare.append(echo_request_id)
    # Before any plugin middleware: preflights are answered ahead of rate limits.
    cors.install(app, core_config.server.cors)
    app[keys.SETTINGS] = settings
    app[keys.CORE_CONFIG] = core_config
    app[keys.PLUGIN_MANAGER] = pm
    app[keys.PLUGIN_CONFIGS] = configs
    app[keys.PROVIDERS] = registry
    app[keys.SERVICES] = services
    app[keys.METADATA] = sqlalchemy.MetaData()
    app[keys.SHUTTING_DOWN] = {"value": False}
    app[keys.CONTRIBUTIONS] = {name: {} for name in pm.loaded}

    for plugin, spec in provided:
        _record(app, plugin, "providers", f"{spec.kind}:{spec.name}")
    pm.call_all("plugboard_configure", app=app, configs=configs)
    _build_schema(app, settings, pm, configs, core_config)
    pm.call_all("plugboard_tables", metadata=app[keys.METADATA], configs=configs)
    _collect_tasks(app, pm, configs)
    _collect_transports(app, pm, configs)
    app[keys.UPLOAD_RULES] = upload_rules.collect(app, pm, configs)
    _add_routes(app, pm, configs, core_config)
    for plugin, middleware in collect_middleware(pm, app, configs):
        app.middlewares.append(middleware)
        _record(app, plugin, "middleware", getattr(middleware, "__name__", repr(middleware)))
    _build_operation_path(app, pm, configs)
    _install_lifecycle(app, pm, configs)
    app.on_shutdown.append(_mark_shutting_down)
    return app


def _register_providers(pm: PluginManager) -> tuple[ProviderRegistry, list[tuple[str, ProviderSpec]]]:
    # Before settings are validated: the services sections name providers.
    registry = ProviderRegistry()
    provided = []
    for plugin, specs in pm.call_each("plugboard_providers"):
        for spec in specs or []:
            registry.add(spec, plugin)
            provided.append((plugin, spec))
    return registry, provided


def _collect_tasks(app: web.Application, pm: PluginManager, configs: dict[str, Any]) -> None:
    tasks: dict[str, tuple[str, Any]] = {}
    for plugin, returned in pm.call_each("plugboard_tasks", app=app, configs=configs):
        for name, fn in (returned or {}).items():
            if name in tasks:
                raise PlugboardError(f"task {name!r} is declared by both plugin {tasks[name][0]!r} and plugin {plugin!r}")
            tasks[name] = (plugin, fn)
            _record(app, plugin, "tasks", name)
    app[keys.TASKS] = tasks
    app[keys.SCHEDULES] = [
        dict(s, plugin=plugin)
        for plugin, returned in pm.call_each("plugboard_schedules", app=app, configs=configs)
        for s in returned or []
    ]
    app[keys.READY_CHECKS] = {
        f"{plugin}:{name}": fn
        for plugin, returned in pm.call_each("plugboard_ready_checks", app=app, configs=configs)
        for name, fn in (returned or {}).items()
    }


def _collect_transports(app: web.Application, pm: PluginManager, configs: dict[str, Any]) -> None:
    transports = []
    for plugin, returned in pm.call_each("plugboard_transports", app=app, configs=configs):
        for transport in returned or []:
            transports.append(transport)
            _record(app, plugin, "transports", transport.name)
    app[keys.TRANSPORTS] = transports


def _build_operation_path(app: web.Application, pm: PluginManager, configs: dict[str, Any]) -> None:
    """The context builder and the operation runner: the same on every transport."""
    context_impls = []
    for impl in pm.ordered_impls("plugboard_context"):
        context_impls.append((impl.plugin_name, impl.function, tuple(impl.argnames)))
        _record(app, impl.plugin_name, "context", impl.function.__name__)
    app[keys.CONTEXT_BUILDER] = ContextBuilder(context_impls)
    steps = []
    for plugin, returned in pm.call_each("plugboard_operation_steps", app=app, configs=configs):
        for step in returned or []:
            steps.append((plugin, step))
            _record(app, plugin, "operation_steps", getattr(step, "__name__", repr(step)))
    stores = [(plugin, store) for plugin, store in pm.call_each("plugboard_persisted_queries", app=app, configs=configs) if store is not None]
    if len(stores) > 1:
        names = " and ".join(repr(plugin) for plugin, _ in stores)
        raise PluginLoadError(f"persisted queries are kept by plugins {names}: at most one plugin may keep them")
    for plugin, store in stores:
        if not isinstance(store, PersistedQueryStore):
            raise PluginLoadError(f"plugin {plugin!r}: plugboard_persisted_queries must return a PersistedQueryStore (async load and save), got {type(store).__name__}")
        _record(app, plugin, "persisted_queries", type(store).__name__)
    graphql = app[keys.CORE_CONFIG].graphql
    shared = SharedStreams(graphql.subscription_buffer) if graphql.share_subscriptions else None
    app[keys.RUNNER] = OperationRunner(
        app[keys.ENGINE], steps, shared=shared, introspection=graphql.introspection, persisted=stores[0][1] if stores else None
    )


def _install_lifecycle(app: web.Application, pm: PluginManager, configs: dict[str, Any]) -> None:
    """Start-up in this order, teardown in reverse (see plugboard.lifecycle)."""
    app.cleanup_ctx.append(lifecycle.redis_ctx)
    app.cleanup_ctx.append(lifecycle.records_ctx)
    app.cleanup_ctx.append(lifecycle.engine_ctx)
    app.cleanup_ctx.append(lifecycle.providers_ctx)
    for plugin, gen_factory in _lifespans(pm, app, configs):
        app.cleanup_ctx.append(lifecycle.plugin_lifespan_ctx(plugin, gen_factory))
    app.cleanup_ctx.append(lifecycle.hooks_ctx)


async def _mark_shutting_down(app: web.Application) -> None:
    app[keys.SHUTTING_DOWN]["value"] = True


def _record(app: web.Application, plugin: str, what: str, item: str) -> None:
    app[keys.CONTRIBUTIONS].setdefault(plugin, {}).setdefault(what, []).append(item)


def _validate_configs(
    settings: Settings, pm: PluginManager, registry: ProviderRegistry, *, disabled: set[str]
) -> tuple[CoreConfig, dict[str, Any], Services]:
    problems: list[ConfigProblem] = []

    def check(section: str, cls: type) -> Any:
        try:
            return structure(cls, settings.section(section), section=section, source_of=settings.source)
        except ConfigError as e:
            problems.extend(e.problems)
            return None

    core = {name: check(name, cls) for name, cls in CORE_SECTIONS.items()}
    configs: dict[str, Any] = {}
    decls, service_problems = declare_services(settings.section(SERVICES_SECTION), registry, settings.source)
    problems += service_problems
    for plugin, cls in pm.call_each("plugboard_config_class"):
        if plugin in CORE_SECTIONS or plugin == SERVICES_SECTION:
            problems.append(ConfigProblem(plugin, None, f"plugin {plugin!r} uses a name reserved for a core section", "plugins"))
            continue
        configs[plugin] = check(plugin, cls) if cls is not None else None
    known = {*CORE_SECTIONS, SERVICES_SECTION, *pm.loaded} | disabled | set(installed_plugins())
    for section in settings.sections():
        source = settings.source(section)
        if section not in known and source.startswith("env ") and not source.startswith("env PLUGBOARD_"):
            # A seed alias (SMTP_HOST ...) for a plugin this deployment does
            # not run: the variable is meant for some other service.
            continue
        if section not in known:
            problems.append(
                ConfigProblem(
                    section,
                    "...",
                    "unknown section: no core section or enabled plugin has this name "
                    f"(core sections: {', '.join((*CORE_SECTIONS, SERVICES_SECTION))}; plugins: {', '.join(sorted(pm.loaded)) or 'none'})",
                    source,
                )
            )
        elif section in pm.loaded and section not in configs and settings.section(section):
            problems.append(ConfigProblem(section, "...", f"plugin {section!r} takes no settings", settings.source(section)))
    if problems:
        raise ConfigError(problems)
    return CoreConfig(**core), configs, Services(decls)


def _collect(pm: PluginManager, hook: str, configs: dict[str, Any], kind: str, problems: list[str]) -> dict[str, Contribution]:
    out: dict[str, Contribution] = {}
    for plugin, returned in pm.call_each(hook, configs=configs):
        for key, value in (returned or {}).items():
            if key in out:
                problems.append(f"{kind} {key!r} is contributed by both plugin {out[key].plugin!r} and plugin {plugin!r}")
                continue
            out[key] = Contribution(plugin, value)
    return out


def _build_schema(app: web.Application, settings: Settings, pm: PluginManager, configs: dict[str, Any], core: CoreConfig) -> None:
    fragments = sdl.base_fragments() + sdl.directory_fragments(settings.root / "schema.d")
    for plugin, returned in pm.call_each("plugboard_schema", configs=configs):
        fragments.extend(sdl.plugin_fragments(plugin, returned))
    composed = sdl.compose(fragments)
    problems: list[str] = []
    resolvers = _collect(pm, "plugboard_resolvers", configs, "resolver", problems)
    subscriptions = _collect(pm, "plugboard_subscriptions", configs, "subscription", problems)
    scalars = _collect(pm, "plugboard_scalars", configs, "scalar", problems)
    directives = _collect(pm, "plugboard_directives", configs, "directive", problems)
    problems += sdl.check_keys(composed, "resolver", resolvers)
    problems += sdl.check_keys(composed, "subscription", subscriptions, subscription_only=True)
    for kind, contributions, want in (("resolver", resolvers, inspect.iscoroutinefunction), ("subscription", subscriptions, inspect.isasyncgenfunction)):
        for key, c in contributions.items():
            if not want(c.value):
                expected = "an async def function" if kind == "resolver" else "an async generator function"
                problems.append(f"plugin {c.plugin!r}: {kind} {key!r} is not {expected}")
    if problems:
        raise SchemaError("\n".join(problems))
    for key, (owner, _) in composed.field_owners.items():
        if owner in pm.loaded:
            _record(app, owner, "fields", key)
    for kind, contributions in (("resolvers", resolvers), ("subscriptions", subscriptions), ("scalars", scalars), ("directives", directives)):
        for key, c in contributions.items():
            _record(app, c.plugin, kind, key)
    app[keys.COMPOSED_SCHEMA] = composed
    app[keys.ENGINE] = GraphQLEngine(
        sdl=composed.sdl,
        resolvers=resolvers,
        subscriptions=subscriptions,
        scalars=scalars,
        directives=directives,
        options=EngineOptions(
            debug=core.server.debug,
            document_cache_size=core.graphql.document_cache_size,
            document_cache_bytes=core.graphql.document_cache_bytes,
            limits=core.graphql.limits,
            coerce_list_concurrently=core.graphql.coerce_list_concurrently,
            coerce_parent_concurrently=core.graphql.coerce_parent_concurrently,
            executor=core.graphql.executor,
        ),
    )


def _add_routes(app: web.Application, pm: PluginManager, configs: dict[str, Any], core: CoreConfig) -> None:
    seen: dict[tuple[str, str], str] = {}
    problems = []

    def add(plugin: str, route: web.AbstractRouteDef) -> None:
        method = getattr(route, "method", "*")
        path = getattr(route, "path", None) or getattr(route, "prefix", "")
        methods = ("GET", "HEAD") if method == "GET" else (("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH") if method == "*" else (method,))
        for m in methods:
            if (m, path) in seen:
                problems.append(f"route {m} {path} is served by both {seen[(m, path)]} and {_who(plugin)}")
                return
        for m in methods:
            seen[(m, path)] = _who(plugin)
        app.router.add_routes([route])
        _record(app, plugin, "routes", f"{method} {path}")

    for route in core_routes.core_routes(core):
        add("core", route)
    for plugin, routes in pm.call_each("plugboard_routes", app=app, configs=configs):
        for route in routes or []:
            add(plugin, route)
    if problems:
        raise PlugboardError("\n".join(problems))


def _who(plugin: str) -> str:
    return "the core" if plugin == "core" else f"plugin {plugin!r}"


def _lifespans(pm: PluginManager, app: web.Application, configs: dict[str, Any]):
    for impl in pm.ordered_impls("plugboard_lifespan"):
        args = {"app": app, "config": configs.get(impl.plugin_name)}
        call_args = {a: args[a] for a in impl.argnames}
        yield impl.plugin_name, (lambda f=impl.function, a=call_args: f(**a))
