"""Every ``plugboard_*`` hook specification: the plugin author's manual.

Hooks are grouped by the phase in which the core calls them. Collection hooks
return plain data and the core applies it (naming the plugin on any problem);
event hooks are called for their effect. Implementations may accept any subset
of a spec's arguments, so specs can grow without breaking plugins.

Ordering: the core calls implementations in the order of the ``plugins:`` list
in settings.yaml (not pluggy's last-registered-first), so earlier plugins wrap
later ones. ``tryfirst``/``trylast`` are honoured only where a spec says so.

A plugin is a module (or any object) with functions decorated with
``@plugboard.hookimpl``::

    from plugboard import hookimpl

    @hookimpl
    def plugboard_schema():
        return "extend type Query { hello: String! }"

    @hookimpl
    def plugboard_resolvers():
        async def hello(parent, args, context, info):
            return "world"
        return {"Query.hello": hello}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Mapping

from plugboard import hookspec

if TYPE_CHECKING:
    from pathlib import Path

    import pluggy
    import sqlalchemy
    from aiohttp import web

    from plugboard.commands import Command
    from plugboard.graphql.context import Context
    from plugboard.graphql.operation import OperationStep
    from plugboard.graphql.persisted import PersistedQueryStore
    from plugboard.graphql.upload import UploadRules
    from plugboard.providers.registry import ProviderSpec


# --------------------------------------------------------------------------
# Phase 1: loading and configuration
# --------------------------------------------------------------------------


@hookspec(historic=True)
def plugboard_addhooks(pluginmanager: "pluggy.PluginManager") -> None:
    """Add new hook specifications, for plugins that let other plugins extend them.

    Called once when the plugin is registered (historic: plugins registered
    later still see it).

    :param pluginmanager: the app's plugin manager; call
        ``pluginmanager.add_hookspecs(module)``.

    Example::

        @hookimpl
        def plugboard_addhooks(pluginmanager):
            from my_plugin import hookspecs
            pluginmanager.add_hookspecs(hookspecs)
    """


@hookspec
def plugboard_requires() -> list[str] | None:
    """Name the plugins this plugin needs, by their entry-point or dotted name.

    Start-up fails with a clear message when one of them is not declared (or is
    declared with ``enabled: false``) in settings.yaml.

    :returns: a list of plugin names, or None.
    """


@hookspec
def plugboard_config_class() -> type | None:
    """Return the attrs class that validates this plugin's settings section.

    The section is the top-level key named after the plugin (``uploads:`` for
    the ``uploads`` plugin). The class should be
    ``@attrs.define(frozen=True, kw_only=True)`` with defaults that run without
    any outside service. Fields may use :data:`plugboard.units.Size`,
    :data:`plugboard.units.Duration` and :data:`plugboard.units.Secret`.
    Unknown keys, wrong types and failed validators stop start-up with one
    message naming the key, the value and where it came from.

    The validated instance is passed as ``config`` to the hooks below and is
    available at run time as ``app[plugboard.keys.PLUGIN_CONFIGS][name]``.

    :returns: an attrs class, or None for a plugin without settings.
    """


@hookspec
def plugboard_configure(app: "web.Application", config: Any) -> None:
    """React once every plugin's settings have been validated (synchronous).

    Called before the schema is composed and before anything starts. A plugin
    may store objects on ``app`` under its own ``web.AppKey``; it must not do
    I/O here (use :func:`plugboard_lifespan` for that).

    :param app: the aiohttp application being built.
    :param config: this plugin's validated config instance (or None).
    """


@hookspec
def plugboard_commands() -> list["Command"] | None:
    """Add subcommands to the ``plugboard`` tool (``plugboard worker``).

    Called when the tool starts, for the plugins declared in the settings
    found through ``--root``/``--config``/``--env`` (or ``PLUGBOARD_ROOT``).
    Return :class:`plugboard.commands.Command` objects; ``run(ctx)`` receives
    a :class:`plugboard.commands.CommandContext` that builds the app as
    ``serve`` does and can run its start-up and shutdown without a server.
    A name that clashes with a core command or another plugin's fails.

    :returns: a list of commands, or None.

    Example::

        @hookimpl
        def plugboard_commands():
            async def main(ctx):
                async with ctx.running(ctx.build_app()) as app:
                    ...
            return [Command("hello", "say hello", lambda ctx: asyncio.run(main(ctx)) or 0)]
    """


# --------------------------------------------------------------------------
# Phase 2: the GraphQL schema
# --------------------------------------------------------------------------


@hookspec
def plugboard_schema(config: Any) -> str | Path | list[str | Path] | None:
    """Return SDL fragments contributed by this plugin.

    Each item is either SDL text or a :class:`pathlib.Path` to a ``.graphql``
    file (read as UTF-8). Prefer a file beside the plugin's module
    (``Path(__file__).with_name("schema.graphql")``, as the built-ins do):
    syntax errors, duplicate fields and fields that do not build then name
    the file and line. Extend the root types with ``extend type Query``,
    ``extend type Mutation`` and ``extend type Subscription``; the core's
    ``schema.d`` declares the roots and the ``DateTime``, ``JSON`` and
    ``Upload`` scalars. Two plugins declaring the same field fail start-up,
    naming both.

    :param config: this plugin's validated config (fragments may depend on it).
    :returns: SDL text, a Path, a list of them, or None.
    """


@hookspec
def plugboard_resolvers(config: Any) -> Mapping[str, Callable[..., Awaitable[Any]]] | None:
    """Return field resolvers keyed by ``"Type.field"``.

    Each value is an ``async def resolver(parent, args, context, info)``. The
    core registers them under this app's private schema name; plugins never
    call Tartiflette's decorators. A key that names no field of the composed
    schema, a key another plugin also resolves, or a non-coroutine function
    fails start-up naming the plugin.

    Exceptions raised by a resolver reach clients as a GraphQL error whose
    message is masked (``Internal server error``) unless ``server.debug`` is
    on; raise :class:`plugboard.graphql.errors.GraphQLError` for a message
    (and ``extensions.code``) meant for clients.

    :param config: this plugin's validated config.
    :returns: a mapping, or None.
    """


@hookspec
def plugboard_subscriptions(config: Any) -> Mapping[str, Callable[..., AsyncIterator[Any]]] | None:
    """Return subscription source streams keyed by ``"Subscription.field"``.

    Each value is an ``async def gen(parent, args, context, info)`` async
    generator. Each yielded value is the root value of one result, as in
    graphql-js: yield ``{"fieldName": value}`` (or contribute a resolver for
    the same key to map what you yield). Same rules as
    :func:`plugboard_resolvers`. Close what you subscribed to in ``finally``:
    the generator is closed when the client goes away.

    :param config: this plugin's validated config.
    :returns: a mapping, or None.
    """


@hookspec
def plugboard_scalars(config: Any) -> Mapping[str, Any] | None:
    """Return custom scalar implementations keyed by scalar name.

    Each value is an object (or class, instantiated by the core) with
    ``coerce_output(value)``, ``coerce_input(value)`` and
    ``parse_literal(ast)`` (return ``plugboard.graphql.engine.UNDEFINED_VALUE``
    for a literal that does not fit). The scalar must be declared in SDL.

    :param config: this plugin's validated config.
    :returns: a mapping, or None.
    """


@hookspec
def plugboard_directives(config: Any) -> Mapping[str, Any] | None:
    """Return directive implementations keyed by directive name.

    Each value is a class or instance following Tartiflette's directive
    interface (``on_field_execution``, ``on_argument_execution`` ...). The
    directive must be declared in SDL.

    :param config: this plugin's validated config.
    :returns: a mapping, or None.
    """


# --------------------------------------------------------------------------
# Phase 3: HTTP, context and the operation lifecycle
# --------------------------------------------------------------------------


@hookspec
def plugboard_middleware(app: "web.Application", config: Any) -> list[Any] | None:
    """Return aiohttp middlewares (``@web.middleware`` coroutines).

    They are installed in the order of the ``plugins:`` list: the first
    declared plugin's middleware is outermost. They run for every route,
    including GraphQL, WebSocket upgrades and SSE.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a list of middlewares, or None.
    """


@hookspec
def plugboard_routes(app: "web.Application", config: Any) -> list["web.AbstractRouteDef"] | None:
    """Return extra routes (``web.get("/path", handler)`` and friends).

    A route whose method and path another plugin (or the core) already serves
    fails start-up naming both.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a list of route definitions, or None.
    """


@hookspec
def plugboard_transports(app: "web.Application", config: Any) -> list[Any] | None:
    """Return extra transports served on the GraphQL path (WebSocket, SSE ...).

    Each transport is an object with ``name: str``, ``methods: tuple[str,
    ...]`` (HTTP methods it may take, e.g. ``("GET", "POST", "PUT",
    "DELETE")``), ``matches(request) -> bool`` (cheap: look at headers only)
    and ``async handle(request) -> web.StreamResponse``. For each request on
    the GraphQL path the core asks transports in plugin order and hands the
    request to the first that matches; plain GraphQL over HTTP answers
    otherwise. Transports build context with
    ``app[plugboard.keys.CONTEXT_BUILDER]`` and run operations through
    ``app[plugboard.keys.RUNNER]``, so the same context and lifecycle apply on
    every transport.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a list of transports, or None.
    """


@hookspec
def plugboard_upload_rules(app: "web.Application", config: Any) -> Mapping[str, "UploadRules"] | None:
    """Return limits and content checks for files sent to your fields, applied as the bytes arrive.

    Called once while the app is built. The multipart transport (GraphQL
    multipart request spec) finds, before reading any file, which fields each
    file reaches through the operation's variables, and applies the rules of
    those fields while it streams the file to disk: a smaller
    ``max_file_size`` than the core's ``graphql.max_file_size`` stops the
    upload mid-way (413, ``extensions.code`` ``FILE_TOO_LARGE``, the
    temporary file removed), and ``check`` sees the first bytes, so a wrong
    type is refused before the rest is received. Files mapped to fields
    without rules get the core's limits only. Several plugins may give rules
    for one field: all of them apply.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a mapping of field coordinates (``"Mutation.uploadFile"``) to
        :class:`plugboard.graphql.upload.UploadRules`, or None. A coordinate
        that names no field of the composed schema fails start-up.

    Example::

        from plugboard.graphql.errors import GraphQLError
        from plugboard.graphql.upload import UploadRules

        @hookimpl
        def plugboard_upload_rules(config):
            def only_pdf(head):
                if not head.data.startswith(b"%PDF-"):
                    raise GraphQLError("only PDF files", "FILE_TYPE_NOT_ALLOWED")
            return {"Mutation.importInvoice": UploadRules(max_file_size=2_000_000, check=only_pdf)}
    """


@hookspec
def plugboard_context(
    context: "Context",
    request: "web.Request",
    connection_params: Mapping[str, Any] | None,
) -> Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None:
    """Contribute per-request context: identity, API key, tenant, loaders.

    Called for every GraphQL operation on every transport (HTTP, multipart,
    WebSocket, SSE) before the operation runs, in plugin order; may be
    ``async``. Return a mapping merged into ``context`` (later plugins see
    earlier ones' values) or set attributes on ``context`` directly. To reject
    the request, raise :class:`plugboard.graphql.errors.GraphQLError` with
    ``code="UNAUTHENTICATED"`` or ``"FORBIDDEN"``; each transport turns that
    into its own form (HTTP 401/403, WebSocket close 4401/4403).

    ``context.identity`` is the conventional place for the authenticated
    user (``None`` when anonymous).

    :param context: the context being built; has ``app``, ``request``,
        ``request_id``, ``transport`` and ``providers``.
    :param request: the aiohttp request (for WebSocket: the upgrade request).
    :param connection_params: the ``connection_init`` payload on WebSocket
        transports, None elsewhere.
    :returns: a mapping of values to add, or None.
    """


@hookspec
def plugboard_operation_steps(app: "web.Application", config: Any) -> list["OperationStep"] | None:
    """Return steps that wrap every GraphQL operation, on every transport.

    A step is ``async def step(operation, call_next)``: inspect
    ``operation.document`` (a :class:`plugboard.graphql.document.DocumentView`
    of the parsed and validated operation: type, name, selections with
    fragments expanded and variables applied, depth, counts; built on first
    access), ``operation.variables``, ``operation.context``; then ``return
    await call_next(operation)`` or return a result without calling it (a
    cache hit keyed by :func:`plugboard.graphql.operation.operation_key`, a
    rejection built with ``operation.error_result(...)``). Headers for the
    response go in ``operation.response_headers`` (a ``CIMultiDict``; HTTP
    and SSE send them). For subscriptions ``call_next`` returns an async
    iterator of results. Steps run in plugin order, the first declared
    plugin's steps outermost. Rate limits, complexity limits, caching and
    analytics hang here.

    A step that only checks or observes may be a plain function returning
    ``call_next(operation)`` (raising to refuse): it then adds no coroutine
    that every await of the operation passes through. To see the outcome
    from such a step, register ``operation.add_done_callback(fn)``;
    ``fn(operation, outcome)`` runs once the chain has finished, with the
    result or the exception that ended it.

    Example, a depth limit::

        async def depth_limit(operation, call_next):
            if operation.document.depth > 10:
                return operation.error_result("the query is too deep", "QUERY_TOO_DEEP")
            return await call_next(operation)

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a list of step callables, or None.
    """


@hookspec
def plugboard_persisted_queries(app: "web.Application", config: Any) -> "PersistedQueryStore | None":
    """Return where persisted queries are kept, to turn on automatic persisted queries (APQ).

    The core speaks the protocol on every transport
    (:mod:`plugboard.graphql.persisted`): a request carrying
    ``extensions.persistedQuery`` with only the document's SHA-256 runs the
    document this store returns for it, or is answered
    ``PERSISTED_QUERY_NOT_FOUND``; one carrying the document too has its
    hash checked, and once it validates it is saved here. The store is a
    :class:`plugboard.graphql.persisted.PersistedQueryStore`: ``async
    load(sha256) -> str | None`` and ``async save(sha256, document)``. At
    most one enabled plugin may return one (the ``cache`` plugin does, on
    its cache service); with none, such requests are answered
    ``PERSISTED_QUERY_NOT_SUPPORTED``.

    :param app: the application being built (stores read the services they
        use from it once it has started).
    :param config: this plugin's validated config.
    :returns: a store, or None.
    """


# --------------------------------------------------------------------------
# Phase 4: providers, tables, tasks
# --------------------------------------------------------------------------


@hookspec
def plugboard_providers() -> list["ProviderSpec"] | None:
    """Declare named provider implementations.

    Return :class:`plugboard.providers.registry.ProviderSpec` objects:
    ``ProviderSpec(kind="storage", name="s3", factory="pkg.mod:S3Storage",
    config=S3Config, requires="aiobotocore")``. The factory is a lazy dotted
    path, imported only when selected; ``requires`` becomes the install hint
    when that import fails. A plugin selects one with
    ``app[PROVIDERS].create(kind, name, config)`` at start-up. Two plugins
    declaring the same ``(kind, name)`` fail start-up naming both.

    :returns: a list of provider specs, or None.
    """


@hookspec
def plugboard_tables(metadata: "sqlalchemy.MetaData", config: Any) -> None:
    """Define this plugin's tables for the records store.

    Add ``sqlalchemy.Table(name, metadata, ...)`` objects to ``metadata``;
    start-up creates the ones that are missing. Prefix table names with the
    plugin's name to stay clear of other plugins.

    :param metadata: the app's records-store metadata.
    :param config: this plugin's validated config.
    """


@hookspec
def plugboard_tasks(app: "web.Application", config: Any) -> Mapping[str, Callable[..., Awaitable[Any]]] | None:
    """Return background task functions keyed by task name.

    The jobs plugin (or any broker plugin) attaches them to the app's broker;
    this core never runs them itself. The contract is in
    :mod:`plugboard.tasks`: ``async def task(**args)`` with JSON arguments,
    checked against the signature at enqueue time; a ``job`` parameter gets
    a :class:`plugboard.tasks.TaskContext` (progress, attempt, app);
    ``@plugboard.tasks.retry(...)`` declares the task's retry strategy and
    :class:`plugboard.tasks.PermanentError` fails a job without retrying.
    Two plugins giving the same name fail start-up naming both.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a mapping of task name to ``async def task(**args)``, or None.
    """


@hookspec
def plugboard_schedules(app: "web.Application", config: Any) -> list[Mapping[str, Any]] | None:
    """Return cron schedules: ``[{"task": "cleanup", "cron": "0 3 * * *"}]``.

    :param app: the application being built.
    :param config: this plugin's validated config.
    :returns: a list of schedule mappings, or None.
    """


# --------------------------------------------------------------------------
# Phase 5: start-up and shutdown
# --------------------------------------------------------------------------


@hookspec
def plugboard_lifespan(app: "web.Application", config: Any) -> AsyncIterator[None] | None:
    """Set up and tear down resources around the app's life.

    An ``async def`` generator: code before ``yield`` runs at start-up, after
    ``yield`` at shutdown (in reverse plugin order). Create clients, pools and
    providers here and keep them on ``app`` under your own ``web.AppKey``.
    Raising before ``yield`` stops start-up.

    :param app: the running application.
    :param config: this plugin's validated config.

    Example::

        @hookimpl
        async def plugboard_lifespan(app, config):
            client = await connect(config.url)
            app[CLIENT] = client
            yield
            await client.close()
    """


@hookspec
def plugboard_startup(app: "web.Application", config: Any) -> Awaitable[None] | None:
    """Run once at start-up, after the engine is ready (may be ``async``).

    :param app: the running application.
    :param config: this plugin's validated config.
    """


@hookspec
def plugboard_shutdown(app: "web.Application", config: Any) -> Awaitable[None] | None:
    """Run once at shutdown, before providers close (may be ``async``).

    :param app: the application stopping.
    :param config: this plugin's validated config.
    """


@hookspec
def plugboard_metrics(app: "web.Application", registry: Any, config: Any) -> Callable[[], Awaitable[None]] | None:
    """Register this plugin's Prometheus metrics on the app's registry.

    Called once per app at start-up (after every plugin's lifespan has set
    up, so the plugin's objects are on ``app``) by the plugin that serves
    ``/metrics`` — the built-in protection plugin, when its metrics are on
    (``protection.metrics``). When no plugin serves metrics it is never
    called, so import ``prometheus_client`` inside the implementation, not at
    the top of the module: the core does not depend on it.

    Prefer collectors that read counts the plugin keeps anyway, at scrape
    time (a custom collector's ``collect()``), over work on the request
    path. Metric names start with ``plugboard_<plugin>_``; keep label values
    bounded (no user input, ids or addresses).

    :param app: the running application.
    :param registry: the app's ``prometheus_client.CollectorRegistry`` (one
        per app, never the process-wide default registry).
    :param config: this plugin's validated config.
    :returns: None, or ``async def refresh()``, awaited before each scrape:
        for values read from a store (counts in a database). Keep it cheap;
        an exception is logged and that scrape goes on without it.

    Example::

        @hookimpl
        def plugboard_metrics(app, registry):
            from prometheus_client import Gauge

            Gauge("plugboard_books_open_carts", "Open carts", registry=registry).set_function(
                lambda: len(app[CARTS])
            )
    """


@hookspec
def plugboard_ready_checks(app: "web.Application", config: Any) -> Mapping[str, Callable[[], Awaitable[None]]] | None:
    """Return readiness checks for ``/readyz``, keyed by a short name.

    Each is ``async def check()`` that raises when its dependency does not
    answer. Providers created through the registry are checked already.

    :param app: the running application.
    :param config: this plugin's validated config.
    :returns: a mapping, or None.
    """
