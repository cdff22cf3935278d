"""Query depth and cost: ``@cost`` read from the composed SDL, the cost model, the operation step.

The model, in the spirit of graphql-armor's costLimit: every object field
costs ``object_cost`` (1), every scalar or enum field ``scalar_cost`` (0);
``@cost(weight: N)`` on a field (or on the type it returns) replaces that;
a list field multiplies its own cost and everything below it by its
``first``/``last``/``limit`` argument (or the arguments ``@cost(multipliers:)``
names), else by ``default_list_size``. Fragments are expanded and aliases
counted (the document view lists each aliased selection). The cost of one
document with its variables is computed once and kept (bounded), so a
repeated query costs a dict lookup.

Over ``max_depth`` or ``max_complexity``: a 400 (``QUERY_TOO_DEEP``,
``QUERY_TOO_COMPLEX``) with the computed value and the limit in
``extensions``. On WebSocket transports each operation also counts against
the client's request policy (an ``error`` with ``extensions.code:
RATE_LIMITED`` when over it).
"""

from __future__ import annotations

import collections
import json
import math
from typing import Any, Iterable

import attrs
from aiohttp import web
from graphql.error import GraphQLSyntaxError
from graphql.language import ast as gql
from graphql.language import parse

from plugboard import keys
from plugboard.errors import SchemaError
from plugboard.graphql.document import DocumentView, Selection
from plugboard.graphql.errors import GraphQLError

DIRECTIVE = "cost"
#: Arguments that size a list when ``@cost`` names none.
LIST_ARGUMENTS = ("first", "last", "limit")
#: Costs of this many documents (with their variables) are kept per app.
CACHE_SIZE = 2048

_DEFINITIONS = (gql.ObjectTypeDefinitionNode, gql.ObjectTypeExtensionNode, gql.InterfaceTypeDefinitionNode, gql.InterfaceTypeExtensionNode)


@attrs.frozen
class Cost:
    weight: int | None = None
    multipliers: tuple[str, ...] = ()


@attrs.define
class Costs:
    """Every ``@cost`` of the schema: ``types["Book"]``, ``fields["Query.books"]``."""

    types: dict[str, Cost] = attrs.field(factory=dict)
    fields: dict[str, Cost] = attrs.field(factory=dict)


def _line(text: str, node: Any) -> int:
    loc = node.loc
    return text.count("\n", 0, loc.start) + 1 if loc is not None else 0


def read_costs(fragments: Iterable[Any]) -> Costs:
    """The ``@cost`` of every fragment (``.source``, ``.text``); SchemaError naming each bad one (file and line)."""
    costs = Costs()
    problems: list[str] = []
    for fragment in fragments:
        if "@" + DIRECTIVE not in fragment.text:
            continue
        try:
            document = parse(fragment.text, no_location=False)
        except GraphQLSyntaxError:  # the engine reports SDL that does not parse
            continue
        for node in document.definitions:
            if not isinstance(node, _DEFINITIONS):
                continue
            type_name = node.name.value
            cost = _cost(node.directives, fragment, f"type {type_name}", problems)
            if cost is not None:
                costs.types[type_name] = cost
            for field in node.fields or ():
                cost = _cost(field.directives, fragment, f"field {type_name}.{field.name.value}", problems)
                if cost is not None:
                    costs.fields[f"{type_name}.{field.name.value}"] = cost
    if problems:
        raise SchemaError("\n".join(problems))
    return costs


def _cost(directives: Any, fragment: Any, what: str, problems: list[str]) -> Cost | None:
    for directive in directives or ():
        if directive.name.value != DIRECTIVE:
            continue
        line = _line(fragment.text, directive)
        where = f"{fragment.source}, SDL line {line}" if fragment.source.startswith("plugin ") else f"{fragment.source}:{line}"
        weight: int | None = None
        multipliers: tuple[str, ...] = ()
        for arg in directive.arguments:
            name = arg.name.value
            value = arg.value
            if name == "weight":
                if isinstance(value, gql.IntValueNode) and int(value.value) >= 0:
                    weight = int(value.value)
                else:
                    shown = getattr(value, "value", "...")
                    problems.append(f"{where}: @cost on {what}: weight must be a whole number >= 0, not {shown}")
            elif name == "multipliers":
                items = value.values if isinstance(value, gql.ListValueNode) else [value]
                if not all(isinstance(i, gql.StringValueNode) for i in items):
                    problems.append(f"{where}: @cost on {what}: multipliers must be argument names (strings)")
                else:
                    multipliers = tuple(i.value for i in items)
            else:
                problems.append(f"{where}: @cost on {what}: unknown argument {name!r}")
        return Cost(weight, multipliers)
    return None


class CostModel:
    """Computes an operation's cost from the document view and the schema's ``@cost``."""

    def __init__(self, costs: Costs, config: Any) -> None:
        self.costs = costs
        self.config = config

    def field_cost(self, sel: Selection) -> int:
        cost = self.costs.fields.get(sel.coordinate) or self.costs.types.get(sel.type.name)
        if cost is not None and cost.weight is not None:
            return cost.weight
        return self.config.scalar_cost if sel.type.is_leaf else self.config.object_cost

    def multiplier(self, sel: Selection) -> int:
        cost = self.costs.fields.get(sel.coordinate)
        names = cost.multipliers if cost is not None and cost.multipliers else (LIST_ARGUMENTS if sel.type.is_list else ())
        found = None
        for name in names:
            value = sel.arguments.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found = max(found or 0, int(value))
            elif isinstance(value, (list, tuple)):
                found = max(found or 0, len(value))
        if found is None:
            return self.config.default_list_size if sel.type.is_list else 1
        return max(found, 0)

    def selections(self, selections: Iterable[Selection]) -> int:
        total = 0
        for sel in selections:
            below = self.selections(sel.selections) if sel.selections else 0
            total += self.multiplier(sel) * (self.field_cost(sel) + below)
        return total

    def cost(self, view: DocumentView) -> int:
        return self.selections(view.selections)


class Analysis:
    """Depth and cost of documents, each computed once (bounded LRU keyed by document, name and variables)."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self._cache: collections.OrderedDict[tuple[Any, ...], tuple[int, int, str | None]] = collections.OrderedDict()
        self.computed = 0

    def key(self, op: Any) -> tuple[Any, ...]:
        document = op.parsed.normalized if op.parsed is not None else op.query
        variables = json.dumps(op.variables, sort_keys=True, default=repr) if op.variables else ""
        return (document, op.operation_name, variables)

    def of(self, op: Any) -> tuple[int, int, str | None]:
        """``(depth, cost, operation name)`` of the operation (the name: the request's, else the document's)."""
        key = self.key(op)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        view = op.document
        found = (view.depth, self.model.cost(view), op.operation_name or view.operation_name)
        self.computed += 1
        self._cache[key] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found


ANALYSIS: web.AppKey[Analysis] = web.AppKey("plugboard.protection.analysis", Analysis)


def operation_steps(app: Any, config: Any) -> list[Any]:
    """The depth/cost step, and the per-operation rate limit on WebSocket transports."""
    from plugboard.plugins.protection.limiter import LIMITER, merge_header, policy_header, ratelimit_header

    limits = config.graphql
    # Read here, once the schema is composed: a bad @cost fails start-up naming its SDL file and line.
    costs = read_costs(app[keys.COMPOSED_SCHEMA].fragments)
    analysis = Analysis(CostModel(costs, limits))
    app[ANALYSIS] = analysis
    from plugboard.plugins.protection.metrics import METRICS

    limiter = app[LIMITER]
    metrics = app.get(METRICS)
    steps: list[Any] = []
    budget = config.budget

    async def _count(key: str, **kwargs: Any) -> Any:
        # fail_closed inside an operation: the transport's own error form
        # (a WebSocket error message, an HTTP error) rather than an aiohttp 503.
        try:
            return await limiter.count(key, **kwargs)
        except web.HTTPServiceUnavailable:
            raise GraphQLError("the rate limit store is unavailable; retry later", "SERVICE_UNAVAILABLE", headers={"Retry-After": "1"}) from None

    async def spend(op: Any, cost: int) -> None:
        # The budget: the operation's cost from the client's window (the
        # first refused operation is not charged).
        key = f"cost:{limiter.identity_key(op.context)}"
        state = await _count(key, cost=max(cost, 1), limit=budget.max, window=budget.window)
        if state is None:
            return
        headers = {"RateLimit-Policy": policy_header("cost", budget.max, budget.window), "RateLimit": ratelimit_header("cost", state)}
        for name, value in headers.items():
            merge_header(op.response_headers, name, value)
        if not state.allowed:
            limiter.refusals += 1
            retry = max(math.ceil(state.reset_after), 1)
            raise GraphQLError(
                f"The query costs {cost}; {state.remaining} of this window's budget of {budget.max} is left",
                "RATE_LIMITED",
                extensions={"cost": cost, "remaining": state.remaining, "budget": budget.max, "retryAfter": retry},
                headers={**headers, "Retry-After": str(retry)},
            )

    async def query_limits(op: Any, call_next: Any) -> Any:
        if limits.max_depth or limits.max_complexity or budget.enabled:
            depth, cost, name = analysis.of(op)
            if metrics is not None:
                metrics.cost.labels(metrics.operation_label(name)).observe(cost)
            if limits.max_depth and depth > limits.max_depth:
                raise GraphQLError(
                    f"The query is {depth} levels deep; the limit is {limits.max_depth}",
                    "QUERY_TOO_DEEP",
                    extensions={"depth": depth, "maxDepth": limits.max_depth},
                )
            if limits.max_complexity and cost > limits.max_complexity:
                raise GraphQLError(
                    f"The query costs {cost}; the limit is {limits.max_complexity}",
                    "QUERY_TOO_COMPLEX",
                    extensions={"cost": cost, "maxComplexity": limits.max_complexity},
                )
            if budget.enabled:
                await spend(op, cost)
        return await call_next(op)

    steps.append(query_limits)

    if config.requests.enabled:

        async def websocket_operations(op: Any, call_next: Any) -> Any:
            # HTTP requests and SSE streams were counted by the middleware;
            # a WebSocket carries many operations on one upgrade.
            if op.transport == "ws":
                request = getattr(op.context, "request", None)
                if request is not None:
                    state = await _count(limiter.client_key(request))
                    if state is not None and not state.allowed:
                        limiter.refusals += 1
                        retry = max(math.ceil(state.reset_after), 1)
                        raise GraphQLError(
                            "Too many requests; retry later",
                            "RATE_LIMITED",
                            extensions={"retryAfter": retry},
                            headers={"Retry-After": str(retry)},
                        )
            return await call_next(op)

        steps.append(websocket_operations)
    return steps

