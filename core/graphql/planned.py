"""The planned executor: runs an operation by walking its plan (``plugboard.graphql.plan``).

Semantics are Tartiflette's, reproduced step for step: the same execution
context (variables coerced by Tartiflette), argument coercion, ``info``,
error location and bubbling to the nearest nullable parent, the same error
messages, and ``coerce_list_concurrently``/``coerce_parent_concurrently``
(read from each field definition, as Tartiflette does) with the same task
structure, so errors are recorded in the same order. What differs is the
cost: fields are looked up once per document rather than once per object,
default resolvers on dicts become a key read, scalars are coerced inline, and
only resolvers that are really asynchronous are awaited.

:meth:`PlannedExecutor.execute` returns None when a document cannot be
planned; the engine then runs Tartiflette's executor (logged once per
document at debug level).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from tartiflette.coercers.arguments import coerce_arguments
from tartiflette.coercers.common import Path
from tartiflette.coercers.outputs.abstract_coercer import ensure_valid_runtime_type
from tartiflette.constants import UNDEFINED_VALUE
from tartiflette.execution.collect import should_include_node
from tartiflette.execution.context import build_execution_context
from tartiflette.execution.types import ResolveInfo
from tartiflette.language.ast import FragmentDefinitionNode, OperationDefinitionNode
from tartiflette.types.exceptions.tartiflette import MultipleException
from tartiflette.utils.errors import extract_exceptions_from_results, located_error

from plugboard.graphql.plan import ABSTRACT, ENUM, LIST, NON_NULL, OBJECT, SCALAR
from plugboard.graphql.plan import Completion, FieldPlan, Planner, TypePlan, Unsupported, conditional_nodes

logger = logging.getLogger("plugboard.graphql")

#: Plans kept per operation, one per outcome of its @skip/@include; more
#: outcomes than this are planned per request rather than kept.
MAX_VARIANTS = 32

_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


class OperationPlan:
    """What is planned once per operation of a document; variants per @skip/@include outcome."""

    __slots__ = ("operation", "fragments", "conditional", "variants", "serial")

    def __init__(self, operation: Any, fragments: dict[str, Any], conditional: list[Any]) -> None:
        self.operation = operation
        self.fragments = fragments
        self.conditional = conditional
        self.serial = operation.operation_type == "mutation"
        #: outcome tuple -> (TypePlan of the root, whether tasks interleave),
        #: or the Unsupported its planning raised.
        self.variants: dict[tuple[bool, ...], tuple[TypePlan, bool] | Unsupported] = {}


def plan_operation(document: Any, operation_name: str | None) -> OperationPlan:
    """The operation-level part of a plan; raises Unsupported."""
    operations, fragments = {}, {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            operations[definition.name.value if definition.name else None] = definition
        elif isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = definition
    if operation_name:
        operation = operations.get(operation_name)
    else:
        operation = next(iter(operations.values())) if len(operations) == 1 else None
    if operation is None:
        raise Unsupported("no such operation (Tartiflette reports it)")
    return OperationPlan(operation, fragments, conditional_nodes(operation, fragments))


class PlannedExecutor:
    """Executes parsed documents by plan; one per engine."""

    def __init__(self, schema: Any, build_response: Callable[..., Awaitable[dict[str, Any]]]) -> None:
        self.schema = schema
        self.build_response = build_response

    def operation_plan(self, parsed: Any, operation_name: str | None) -> OperationPlan | None:
        """The document's plan for ``operation_name``, kept with the parsed document; None: not plannable."""
        key = ("plan", operation_name)
        cached = parsed.derived.get(key, UNDEFINED_VALUE)
        if cached is UNDEFINED_VALUE:
            try:
                cached = plan_operation(parsed.document, operation_name)
            except Unsupported as e:
                logger.debug("executing with Tartiflette (%s): %.200s", e, parsed.source)
                cached = None
            parsed.derived[key] = cached
        return cached

    async def execute(
        self,
        parsed: Any,
        *,
        operation_name: str | None,
        context: Any,
        variables: Mapping[str, Any] | None,
        root_value: Any = None,
    ) -> dict[str, Any] | None:
        """The response, as Tartiflette's ``execute`` builds it; None when the document is not plannable."""
        op_plan = self.operation_plan(parsed, operation_name)
        if op_plan is None:
            return None
        ec, errors = await build_execution_context(
            self.schema, parsed.document, root_value, context, variables, operation_name
        )
        if errors:
            return await self.build_response(errors=errors)
        variant = await self._variant(op_plan, ec, parsed)
        if variant is None:
            return None
        root, interleaved = variant
        run = _Run(self.schema, ec, interleaved)
        try:
            if op_plan.serial:
                data = await run.execute_serially(root, root_value)
            else:
                data = await run.execute_fields(root, root_value, None)
        except Exception as e:  # noqa: BLE001 - as Tartiflette's execute_operation: the error is the answer
            ec.add_error(e)
            data = None
        return await self.build_response(data=data, errors=ec.errors)

    async def _variant(self, op_plan: OperationPlan, ec: Any, parsed: Any) -> tuple[TypePlan, bool] | None:
        included = {}
        for node in op_plan.conditional:
            # Tartiflette's own check: @skip/@include arguments coerced as it
            # does, and a failing one excludes the selection, as it does.
            included[id(node)] = await should_include_node(ec, node)
        outcome = tuple(included.values())
        variant = op_plan.variants.get(outcome)
        if variant is None:
            planner = Planner(self.schema, op_plan.operation, op_plan.fragments, included)
            try:
                variant = (planner.root(), planner.interleaved)
            except Unsupported as e:
                logger.debug("executing with Tartiflette (%s): %.200s", e, parsed.source)
                variant = e
            if len(op_plan.variants) < MAX_VARIANTS:
                op_plan.variants[outcome] = variant
        return None if isinstance(variant, Unsupported) else variant


class _Run:
    """One execution of a plan: the walk, with Tartiflette's execution context for errors."""

    __slots__ = ("schema", "ec", "context", "arguments", "interleaved")

    def __init__(self, schema: Any, ec: Any, interleaved: bool) -> None:
        self.schema = schema
        self.ec = ec
        self.context = ec.context
        self.arguments: dict[FieldPlan, dict[str, Any]] = {}
        #: Tasks can interleave (Planner.interleaved): the walk then keeps
        #: every suspension point Tartiflette has (argument coercion per call,
        #: @skip/@include per collection, see TypePlan.checks), so errors are
        #: recorded in the same order.
        self.interleaved = interleaved

    async def execute_serially(self, plan: TypePlan, source: Any) -> dict[str, Any]:
        results = {}
        for fp in plan.fields:
            result = await self.resolve_field(fp, source, Path(None, fp.key))
            if result is not UNDEFINED_VALUE:
                results[fp.key] = result
        return results

    async def execute_fields(self, plan: TypePlan, source: Any, path: Path | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pending: list[tuple[str, Any]] = []
        is_dict = type(source) is dict
        for fp in plan.fields:
            if fp.parent_concurrently:
                pending.append((fp.key, self.resolve_field(fp, source, Path(path, fp.key))))
                out[fp.key] = None  # its place in the response's order
                continue
            if fp.typename:
                out[fp.key] = plan.object_type.name
                continue
            if is_dict and fp.dict_fast:
                # The default resolver on a dict, then the scalar's coercion;
                # anything unusual (null, a value the scalar refuses) takes
                # the full path below, which repeats these pure steps.
                value = source.get(fp.name)
                if fp.str_identity and type(value) is str:
                    out[fp.key] = value
                    continue
                if value is not None:
                    try:
                        coerced = fp.completion_coerce(value)
                    except Exception:  # noqa: BLE001 - redone below, where the error is reported
                        coerced = UNDEFINED_VALUE
                    if coerced is not UNDEFINED_VALUE and coerced is not None:
                        out[fp.key] = coerced
                        continue
            try:
                result = await self.resolve_field(fp, source, Path(path, fp.key))
            except BaseException:
                for _, coroutine in pending:
                    coroutine.close()  # never started: Tartiflette leaves these unawaited
                raise
            if result is not UNDEFINED_VALUE:
                out[fp.key] = result
        if pending:
            if self.interleaved:
                awaited = await asyncio.gather(*[c for _, c in pending], return_exceptions=True)
            else:
                # No other task of this request can run meanwhile (the plan
                # has at most one concurrent field per object and no
                # concurrent lists): awaiting in place gives what gather
                # would, without a task and a loop turn per object.
                awaited = []
                for _, coroutine in pending:
                    try:
                        awaited.append(await coroutine)
                    except Exception as e:  # noqa: BLE001 - gather(return_exceptions=True)
                        awaited.append(e)
            for result in awaited:
                if isinstance(result, MultipleException):
                    raise extract_exceptions_from_results(awaited)
            for (key, _), result in zip(pending, awaited):
                if result is UNDEFINED_VALUE:
                    del out[key]
                else:
                    out[key] = result
        return out

    async def resolve_field(self, fp: FieldPlan, source: Any, path: Path) -> Any:
        info = None
        try:
            args = await self.coerce_arguments(fp) if fp.has_arguments else {}
            if fp.resolver is not None:
                info = self.info(fp, path)
                result = await fp.resolver(source, args, self.context, info)
            elif fp.typename:
                result = fp.parent_type.name
            else:
                result = _default_resolve(source, fp.name)
        except Exception as e:  # noqa: BLE001 - as Tartiflette: a resolver's error is its field's value
            result = e
        if info is None and fp.needs_info:
            info = self.info(fp, path)
        return await self.complete_catching(result, fp, path, fp.completion, info)

    async def coerce_arguments(self, fp: FieldPlan) -> dict[str, Any]:
        if fp.literal_arguments and not self.interleaved:
            constant = fp.constant_arguments
            if constant is not None:
                return dict(constant)  # a copy, as Tartiflette's fresh dict: a resolver may change its own
        cached = self.arguments.get(fp)
        if cached is not None:
            return dict(cached)
        definition = fp.definition
        args = await coerce_arguments(
            definition.arguments,
            fp.field_nodes[0],
            self.ec.variable_values,
            self.context,
            coercer=definition.arguments_coercer,
        )
        if fp.cache_arguments and not self.interleaved:
            # A copy per call, as Tartiflette's fresh dict: a resolver may change its own.
            self.arguments[fp] = dict(args)
            if fp.literal_arguments and all(type(v) in _IMMUTABLE for v in args.values()):
                # Kept across requests only when no resolver can change a value in place.
                fp.constant_arguments = dict(args)
        return args

    async def replay_checks(self, plan: TypePlan) -> None:
        for node in plan.checks:
            await should_include_node(self.ec, node)

    def info(self, fp: FieldPlan, path: Path) -> ResolveInfo:
        ec = self.ec
        return ResolveInfo(
            fp.name,
            fp.field_nodes,
            fp.definition.graphql_type,
            fp.parent_type,
            path,
            self.schema,
            ec.fragments,
            ec.root_value,
            ec.operation,
            ec.variable_values,
            False,
        )

    async def complete_catching(self, result: Any, fp: FieldPlan, path: Path, c: Completion, info: Any) -> Any:
        try:
            if isinstance(result, Exception):
                raise result
            plan = c.object_plan
            if plan is not None and result is not None and not (self.interleaved and plan.checks):
                return await self.execute_fields(plan, result, path)  # what complete() would do, two awaits less
            return await self.complete(c, result, fp, path, info)
        except Exception as raw:  # noqa: BLE001 - Tartiflette's handle_field_error
            error = located_error(raw, fp.field_nodes, path.as_list())
            if c.non_null:
                raise error from None
            self.ec.add_error(error)
            return None

    async def complete(self, c: Completion, result: Any, fp: FieldPlan, path: Path, info: Any) -> Any:
        kind = c.kind
        non_null = kind == NON_NULL
        if non_null:
            # One level: GraphQL has no non-null of a non-null.
            c = c.inner
            kind = c.kind
        if result is None:
            value = None
        elif kind == SCALAR:
            value = c.coerce(result)
            if value is UNDEFINED_VALUE:
                raise ValueError(f"Expected value of type {c.gql_type} but received {type(result)}.")
        elif kind == OBJECT:
            plan = c.object_plan
            if self.interleaved and plan.checks:
                await self.replay_checks(plan)
            value = await self.execute_fields(plan, result, path)
        elif kind == LIST:
            value = await self.complete_list(c, result, fp, path, info)
        elif kind == ENUM:
            try:
                c.gql_type.get_value(result)
            except KeyError:
                raise ValueError(f"Expected value of type {c.gql_type} but received {type(result)}.") from None
            value = result  # enum values without output hooks (checked when planned) pass as they are
        elif kind == ABSTRACT:
            abstract = c.gql_type
            resolve_type = abstract.get_type_resolver(fp.abstract_resolver_key, self.schema.default_type_resolver)
            runtime_type = ensure_valid_runtime_type(
                resolve_type(result, self.context, info, abstract), self.ec, abstract, fp.field_nodes, info, result
            )
            plan = c.children[runtime_type.name]
            if self.interleaved and plan.checks:
                await self.replay_checks(plan)
            value = await self.execute_fields(plan, result, path)
        else:
            raise AssertionError(f"unknown completion kind {kind}")
        if non_null and value is None:
            raise ValueError(f"Cannot return null for non-nullable field {fp.parent_type.name}.{fp.name}.")
        return value

    async def complete_list(self, c: Completion, result: Any, fp: FieldPlan, path: Path, info: Any) -> list[Any]:
        if not isinstance(result, list):
            raise TypeError(f"Expected Iterable, but did not find one for field {fp.parent_type.name}.{fp.name}.")
        inner = c.inner
        if fp.list_concurrently:
            values = await asyncio.gather(
                *[self.complete_catching(item, fp, Path(path, i), inner, info) for i, item in enumerate(result)],
                return_exceptions=True,
            )
        else:
            values = []
            complete_catching = self.complete_catching
            for i, item in enumerate(result):
                try:
                    value = await complete_catching(item, fp, Path(path, i), inner, info)
                except Exception as e:  # noqa: BLE001 - kept, then raised together (Tartiflette's list coercer)
                    value = e
                values.append(value)
        exceptions = extract_exceptions_from_results(values)
        if exceptions:
            raise exceptions
        return values


def _default_resolve(parent: Any, name: str) -> Any:
    # Tartiflette's default_field_resolver, without the coroutine.
    try:
        return getattr(parent, name)
    except AttributeError:
        pass
    try:
        return parent[name]
    except (KeyError, TypeError):
        pass
    return None
