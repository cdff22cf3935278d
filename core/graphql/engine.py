"""The only module that talks to Tartiflette's engine and its global registry.

Tartiflette keeps every resolver, scalar and directive in a process-wide
``SchemaRegistry`` keyed by schema name. We contain that here: each app gets a
schema name of its own (``plugboard-<uuid>``), the decorators are applied at
build time to what plugins returned as plain data, and the app's registry
entry is dropped again on shutdown, so two apps in one process never see each
other's resolvers.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import uuid
from typing import Any, AsyncIterator, Callable, Mapping

import contextvars

import attrs
import cffi
from tartiflette import Directive, Resolver, Scalar, Subscription, create_engine
from tartiflette.constants import UNDEFINED_VALUE  # noqa: F401  (for scalars, which need not import Tartiflette)
from tartiflette.directive.builtins.deprecated import DeprecatedDirective
from tartiflette.language.parsers.libgraphqlparser import parser as _libgraphqlparser
from tartiflette.language.parsers.libgraphqlparser.transformers import document_from_ast_json
from tartiflette.utils.errors import to_graphql_error
from tartiflette.execution.execute import create_source_event_stream, execute
from tartiflette.schema.registry import SchemaRegistry
from tartiflette.types.exceptions.tartiflette import GraphQLSyntaxError, TartifletteError

from plugboard.errors import SchemaError
from plugboard.graphql.document_cache import DocumentCache
from plugboard.graphql import introspection
from plugboard.graphql.differential import compare_results
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.limits import LimitsConfig, check_document
from plugboard.graphql.parsed import ParsedDocument
from plugboard.graphql.planned import PlannedExecutor

logger = logging.getLogger("plugboard.graphql")
#: Set while differential checking re-runs an operation on Tartiflette's
#: executor: resolver errors were logged by the first run already.
_REFERENCE_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar("plugboard_reference_run", default=False)


@attrs.define(frozen=True)
class Contribution:
    """One resolver/subscription/scalar/directive and the plugin that gave it."""

    plugin: str
    value: Any


@attrs.define(frozen=True, kw_only=True)
class EngineOptions:
    debug: bool = False
    document_cache_size: int = 512
    document_cache_bytes: int = 64 * 1024 * 1024
    limits: LimitsConfig = LimitsConfig()
    coerce_list_concurrently: bool = False
    coerce_parent_concurrently: bool = False
    #: ``planned`` (plugboard.graphql.planned, falling back to Tartiflette's
    #: executor per document) or ``tartiflette``.
    executor: str = "planned"


@attrs.define(frozen=True)
class FieldDef:
    type_name: str
    field_name: str
    line: int


@attrs.define(frozen=True)
class FragmentShape:
    """What one SDL fragment declares: type definitions, extensions, fields."""

    defined_types: tuple[str, ...]
    extended_types: tuple[str, ...]
    fields: tuple[FieldDef, ...]


def fragment_shape(text: str, origin: str) -> FragmentShape:
    """Parse one SDL fragment (Tartiflette's own SDL parser) and list what it declares."""
    from tartiflette.language.parsers.lark import parse_to_document

    try:
        document = parse_to_document(text)
    except Exception as e:  # lark raises a family of its own exceptions
        line = getattr(e, "line", None)
        where = f"{origin}:{line}" if isinstance(line, int) and line > 0 else origin
        raise SchemaError(f"{where}: SDL does not parse: {_first_line(e)}") from e
    defined, extended, fields = [], [], []
    for node in document.definitions:
        kind = type(node).__name__
        name = getattr(getattr(node, "name", None), "value", None)
        if name is None:
            continue
        if kind.endswith("TypeExtensionNode"):
            extended.append(name)
        elif kind.endswith("TypeDefinitionNode"):
            defined.append(name)
        for field in getattr(node, "fields", None) or []:
            loc = getattr(field, "location", None)
            fields.append(FieldDef(name, field.name.value, getattr(loc, "line", 0)))
    return FragmentShape(tuple(defined), tuple(extended), tuple(fields))


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _guard_resolver(fn: Callable, plugin: str, key: str, debug: bool) -> Callable:
    """Turn a plugin's exceptions into GraphQL errors the way the protocol expects.

    A GraphQLError keeps its message and code; anything else is logged once,
    in full, with the request id and owning plugin, and masked for clients.
    """

    @functools.wraps(fn)
    async def guarded(parent, args, context, info):
        try:
            return await fn(parent, args, context, info)
        except (TartifletteError, GraphQLError) as e:
            raise _client_error(e) from e
        except Exception as e:
            raise _internal_error(e, plugin, key, context, debug) from e

    return guarded


def _guard_subscription(fn: Callable, plugin: str, key: str, debug: bool) -> Callable:
    @functools.wraps(fn)
    async def guarded(parent, args, context, info):
        source = fn(parent, args, context, info)
        try:
            async for value in source:
                yield value
        except (TartifletteError, GraphQLError) as e:
            raise _client_error(e) from e
        except Exception as e:
            raise _internal_error(e, plugin, key, context, debug) from e
        finally:
            # Closing this wrapper does not close what it iterates: do it, so
            # the plugin's finally (unsubscribe) runs now, not at GC time.
            await source.aclose()

    return guarded


def _client_error(e: Exception) -> TartifletteError:
    if isinstance(e, TartifletteError):
        return e
    return TartifletteError(e.message, extensions=dict(e.extensions))


def _internal_error(e: Exception, plugin: str, key: str, context: Any, debug: bool) -> TartifletteError:
    request_id = getattr(context, "request_id", None)
    if not _REFERENCE_RUN.get():
        logger.error(
            "plugin %r: resolver %s raised (request %s)", plugin, key, request_id, exc_info=e
        )
    message = f"{type(e).__name__}: {e}" if debug else "Internal server error"
    extensions = {"code": "INTERNAL_SERVER_ERROR"}
    if request_id:
        extensions["requestId"] = request_id
    return TartifletteError(message, extensions=extensions)


#: libgraphqlparser's position at the head of a syntax error: ``line.column``,
#: then for a span ``-column`` or ``-line.column`` ("1.9: syntax error, unexpected EOF").
_SYNTAX_AT = re.compile(r"(\d+)\.(\d+)(?:-\d+(?:\.\d+)?)?: ")


def _format_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Parse and validation errors as Apollo Server shapes them: ``locations`` and ``extensions.code``, never a ``path``.

    ``GRAPHQL_PARSE_FAILED`` for a document that does not parse, with the
    location libgraphqlparser writes only into the message; and
    ``GRAPHQL_VALIDATION_FAILED`` for one that breaks a validation rule,
    which ``extensions`` also names (``rule``, ``tag``). Tartiflette gives
    validation errors the path of the field they were found on; the spec
    keeps ``path`` for errors raised while executing a field.
    """
    out = []
    for error in errors:
        if not hasattr(error, "coerce_value"):
            out.append({"message": str(error)})
            continue
        formatted = error.coerce_value()
        formatted.pop("path", None)
        extensions = formatted.setdefault("extensions", {})
        if isinstance(error, GraphQLSyntaxError):
            extensions.setdefault("code", "GRAPHQL_PARSE_FAILED")
            at = _SYNTAX_AT.match(str(formatted.get("message", "")))
            if at and not formatted.get("locations"):
                formatted["locations"] = [{"line": int(at[1]), "column": int(at[2])}]
        elif "rule" in extensions:
            extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
        elif not extensions:
            del formatted["extensions"]
        out.append(formatted)
    return out


def _drop_null_paths(errors: list[dict[str, Any]] | None) -> None:
    # Tartiflette writes ``"path": null`` on errors that belong to no field;
    # the spec leaves the key out (and clients such as schemathesis group by it).
    for error in errors or ():
        if isinstance(error, dict) and error.get("path", ()) is None:
            del error["path"]


#: Tartiflette's first ``_build_response`` argument when a request fails before execution.
_REQUEST_ERROR: Any = object()


class GraphQLEngine:
    """A cooked Tartiflette engine under an app-unique schema name."""

    def __init__(
        self,
        *,
        sdl: str,
        resolvers: Mapping[str, Contribution],
        subscriptions: Mapping[str, Contribution],
        scalars: Mapping[str, Contribution],
        directives: Mapping[str, Contribution],
        options: EngineOptions,
    ) -> None:
        self.schema_name = f"plugboard-{uuid.uuid4().hex}"
        self.sdl = sdl
        self.options = options
        self._resolvers = resolvers
        self._subscriptions = subscriptions
        self._scalars = scalars
        self._directives = directives
        self._engine: Any = None
        self._planned: PlannedExecutor | None = None
        self.documents = DocumentCache(options.document_cache_size, options.document_cache_bytes)
        #: Run queries through both executors and raise ``ExecutorMismatch``
        #: unless their JSON is identical (the test kit's differential mode).
        self.compare_executors = False

    def with_resolvers(self, resolvers: Mapping[str, Contribution], options: EngineOptions) -> "GraphQLEngine":
        """A new, uncooked engine over the same SDL, scalars and directives, with other resolvers.

        For differential tests and benchmarks that drive the composed schema
        with resolvers of their own; subscriptions are left out.
        """
        return GraphQLEngine(
            sdl=self.sdl, resolvers=resolvers, subscriptions={}, scalars=self._scalars, directives=self._directives, options=options
        )

    async def cook(self) -> None:
        name, debug = self.schema_name, self.options.debug
        try:
            # Claimed before create_engine, so Tartiflette skips its June 2018
            # introspection and @deprecated built-ins (see graphql.introspection).
            for key, fn in introspection.RESOLVERS.items():
                Resolver(key, schema_name=name)(fn)
            Directive("deprecated", schema_name=name)(DeprecatedDirective())
            Directive("specifiedBy", schema_name=name)(introspection.SpecifiedByDirective())
            for key, c in self._resolvers.items():
                Resolver(key, schema_name=name)(_guard_resolver(c.value, c.plugin, key, debug))
            for key, c in self._subscriptions.items():
                Subscription(key, schema_name=name)(_guard_subscription(c.value, c.plugin, key, debug))
            for key, c in self._scalars.items():
                value = c.value() if inspect.isclass(c.value) else c.value
                Scalar(key, schema_name=name)(value)
            for key, c in self._directives.items():
                Directive(key, schema_name=name)(c.value)
            self._engine = await create_engine(
                f"{self.sdl}\n{introspection.SDL}",
                schema_name=name,
                coerce_list_concurrently=self.options.coerce_list_concurrently,
                coerce_parent_concurrently=self.options.coerce_parent_concurrently,
                query_cache_decorator=None,
            )
        except SchemaError:
            self.drop()
            raise
        except Exception as e:
            self.drop()
            raise SchemaError(f"the composed schema does not build: {_first_line(e)}") from e
        # Tartiflette calls its engine's ``_build_response`` with ``errors``
        # alone when the request fails before execution (variable coercion,
        # see tartiflette.execution.execute) and with ``data`` too after it.
        # Ours, on this engine only, makes the first a request error: no
        # ``data`` key, as the spec's "request errors" are answered.
        build = self._engine._build_response

        async def build_response(data: Any = _REQUEST_ERROR, errors: list[Any] | None = None) -> dict[str, Any]:
            result = await build(data=None if data is _REQUEST_ERROR else data, errors=errors)
            _drop_null_paths(result.get("errors"))
            if data is _REQUEST_ERROR and result.get("errors"):
                del result["data"]
                for error in result["errors"]:
                    if str(error.get("message", "")).startswith("Variable < $"):
                        error.setdefault("extensions", {}).setdefault("code", "BAD_USER_INPUT")
            return result

        self._engine._build_response = build_response
        if self.options.executor == "planned":
            self._planned = PlannedExecutor(self._engine._schema, build_response)

    def parse(self, query: str) -> ParsedDocument:
        """The parsed and validated document, from the cache when it is there.

        Our own cache over Tartiflette's parser: the document is needed before
        execution (operation type, complexity), and Tartiflette must then not
        parse the same text again. It holds ParsedDocuments, so what steps
        derive from a document (its view) is cached with it. On a miss the
        structural limits run first (one lexer pass), so Tartiflette never
        sees a document that could stall the loop or its recursion.
        """
        parsed = self.documents.get(query)
        if parsed is None:
            parsed = self._parse_uncached(query)
            self.documents.put(query, parsed)
        return parsed

    def _parse_uncached(self, query: str) -> ParsedDocument:
        try:
            shape = check_document(query, self.options.limits)
        except GraphQLError as e:
            return ParsedDocument(None, [e.formatted()], query)
        schema = self._engine._schema
        try:
            document, errors = _parse_and_validate(query, schema)
        except RecursionError:
            # The limits bound depth; a nesting they do not see (a value
            # shape, a limit turned off) must still be a client error.
            return ParsedDocument(None, [GraphQLError("the document is nested too deeply", "QUERY_TOO_DEEP").formatted()], query)
        return ParsedDocument(document, _format_errors(errors) if errors else None, query, schema, shape)

    async def execute(
        self,
        parsed: ParsedDocument,
        *,
        operation_name: str | None,
        context: Any,
        variables: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        planned = self._planned
        if planned is not None:
            try:
                result = await planned.execute(parsed, operation_name=operation_name, context=context, variables=variables)
            except Exception as e:  # as Tartiflette's, below: a request-level problem
                result = await self._engine._build_response(errors=[_as_tartiflette_error(e)])
            if result is not None:
                if self.compare_executors and _is_query(parsed, operation_name):
                    token = _REFERENCE_RUN.set(True)
                    try:
                        reference = await self._execute_tartiflette(parsed, operation_name, context, variables)
                    finally:
                        _REFERENCE_RUN.reset(token)
                    compare_results(result, reference, query=parsed.source, variables=variables)
                return result
        return await self._execute_tartiflette(parsed, operation_name, context, variables)

    def executor_for(self, parsed: ParsedDocument, operation_name: str | None) -> str:
        """``planned`` or ``tartiflette``: which executor runs this operation (for tests and debugging).

        As decided by the requests so far: a document is planned per outcome
        of its @skip/@include, and falls back when an outcome reaches what
        plans do not cover; ``planned`` if any outcome (or none yet) was planned.
        """
        op_plan = None if self._planned is None else self._planned.operation_plan(parsed, operation_name)
        if op_plan is None:
            return "tartiflette"
        variants = list(op_plan.variants.values())
        if variants and all(isinstance(v, Exception) for v in variants):
            return "tartiflette"
        return "planned"

    async def _execute_tartiflette(
        self, parsed: ParsedDocument, operation_name: str | None, context: Any, variables: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        engine = self._engine
        try:
            return await engine._query_executor(
                engine._schema,
                parsed.document,
                None,
                operation_name,
                context,
                variables,
                None,
                context_coercer=context,
            )
        except Exception as e:  # Tartiflette raises for a few request-level problems
            return await engine._build_response(errors=[_as_tartiflette_error(e)])

    async def subscribe(
        self,
        parsed: ParsedDocument,
        *,
        operation_name: str | None,
        context: Any,
        variables: Mapping[str, Any] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        # Tartiflette's own subscribe nests async generators without closing
        # the inner ones: a stream stopped mid-event left the plugin's source
        # (and its pubsub subscription) to the garbage collector. Driving the
        # source here lets us close it the moment the client goes away.
        engine = self._engine
        schema, document, build = engine._schema, parsed.document, engine._build_response
        try:
            source = await create_source_event_stream(schema, document, build, None, context, variables, operation_name)
        except Exception as e:
            yield await build(errors=[_as_tartiflette_error(e)])
            return
        if isinstance(source, dict):  # errors (variables, arguments) before any event
            yield source
            return
        planned = self._planned
        try:
            async for payload in source:
                result = None
                if planned is not None:
                    # Each event runs the operation with the event as root value,
                    # through the plan kept with the document (Tartiflette's
                    # subscribe does the same with its executor).
                    result = await planned.execute(
                        parsed, operation_name=operation_name, context=context, variables=variables, root_value=payload
                    )
                    if result is not None and self.compare_executors:
                        token = _REFERENCE_RUN.set(True)
                        try:
                            reference = await execute(schema, document, build, payload, context, variables, operation_name)
                        finally:
                            _REFERENCE_RUN.reset(token)
                        compare_results(result, reference, query=parsed.source, variables=variables)
                if result is None:
                    result = await execute(schema, document, build, payload, context, variables, operation_name)
                yield result
        finally:
            await source.aclose()

    def field_names(self) -> dict[str, list[str]]:
        """Object type name -> its field names, from the cooked schema."""
        out: dict[str, list[str]] = {}
        for name, gql_type in self._engine._schema.type_definitions.items():
            fields = getattr(gql_type, "implemented_fields", None) or getattr(gql_type, "fields", None)
            if isinstance(fields, dict) and not name.startswith("__"):
                out[name] = list(fields)
        return out

    def drop(self) -> None:
        # The single sanctioned touch of Tartiflette's internals: remove only
        # this app's entry. SchemaRegistry.clean() would wipe every live app.
        SchemaRegistry._schemas.pop(self.schema_name, None)


def _is_query(parsed: ParsedDocument, operation_name: str | None) -> bool:
    types = parsed.operation_types
    if operation_name is None:
        return len(types) == 1 and next(iter(types.values())) == "query"
    return types.get(operation_name) == "query"


def _parse_and_validate(query: str, schema: Any) -> tuple[Any, list[Any] | None]:
    """Tartiflette's ``parse_and_validate_query``, without its leak.

    Tartiflette 1.4 never frees the JSON text ``graphql_ast_to_json`` returns
    (libgraphqlparser ``strdup``s it): about 20 bytes of C heap per byte of
    every document parsed, for good (tests/core/hardening/test_document_cache.py).
    We make the same calls and free that text.
    """
    try:
        with _libgraphqlparser._parse_context_manager(query) as parsed:
            text = _libgraphqlparser._LIB.graphql_ast_to_json(parsed)
            try:
                ast_json = _libgraphqlparser._FFI.string(text)
            finally:
                _LIBC.free(_C_FFI.cast("void *", int(_libgraphqlparser._FFI.cast("uintptr_t", text))))
        document = document_from_ast_json(schema.json_loader(ast_json), query, schema)
    except TartifletteError as e:
        return None, [e]
    except RecursionError:
        raise
    except Exception as e:  # noqa: BLE001 - as Tartiflette: anything else is a server-side parse failure
        return None, [to_graphql_error(e, message="Server encountered an error.")]
    if document.validators.errors:
        return None, document.validators.errors
    return document, None


_C_FFI = cffi.FFI()
_C_FFI.cdef("void free(void *ptr);")
_LIBC = _C_FFI.dlopen(None)


def _as_tartiflette_error(e: Exception) -> TartifletteError:
    if isinstance(e, TartifletteError):
        return e
    if isinstance(e, GraphQLError):
        return _client_error(e)
    return TartifletteError(message=str(e), original_error=e)
