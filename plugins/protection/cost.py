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
``extensions``. The budget (``protection.budget``; a key's own from its
record, else from ``key_overrides``) is spent under the caller's identity; over it,
``RATE_LIMITED`` with the cost and what is left.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Iterable

import attrs
from aiohttp import web
from graphql.language import ast as gql

from plugboard import keys
from plugboard.errors import SchemaError
from plugboard.graphql.document import DocumentView, Selection
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.sdl import DirectiveUse, directive_uses

DIRECTIVE = "cost"
#: Arguments that size a list when ``@cost`` names none.
LIST_ARGUMENTS = ("first", "last", "limit")
#: Costs of this many documents (with their variables) are kept per app.
CACHE_SIZE = 2048


@attrs.frozen
class Cost:
    weight: int | None = None
    multipliers: tuple[str, ...] = ()


@attrs.define
class Costs:
    """Every ``@cost`` of the schema: ``types["Book"]``, ``fields["Query.books"]``."""

    types: dict[str, Cost] = attrs.field(factory=dict)
    fields: dict[str, Cost] = attrs.field(factory=dict)


def read_costs(fragments: Iterable[Any]) -> Costs:
    """The ``@cost`` of every fragment; SchemaError naming each bad one (file and line)."""
    costs = Costs()
    problems: list[str] = []
    for use in directive_uses(fragments, DIRECTIVE):
        cost = _cost(use, problems)
        if cost is None:
            continue
        if use.field_name is None:
            costs.types[use.type_name] = cost
        else:
            costs.fields[use.coordinate] = cost
    if problems:
        raise SchemaError("\n".join(problems))
    return costs


def _cost(use: DirectiveUse, problems: list[str]) -> Cost | None:
    weight: int | None = None
    multipliers: tuple[str, ...] = ()
    ok = True
    for name, value in use.arguments.items():
        if name == "weight":
            if isinstance(value, gql.IntValueNode) and int(value.value) >= 0:
                weight = int(value.value)
            else:
                shown = getattr(value, "value", "...")
                problems.append(f"{use.where}: @cost on {use.what}: weight must be a whole number >= 0, not {shown}")
                ok = False
        elif name == "multipliers":
            items = value.values if isinstance(value, gql.ListValueNode) else [value]
            if not all(isinstance(i, gql.StringValueNode) for i in items):
                problems.append(f"{use.where}: @cost on {use.what}: multipliers must be argument names (strings)")
                ok = False
            else:
                multipliers = tuple(i.value for i in items)
        else:
            problems.append(f"{use.where}: @cost on {use.what}: unknown argument {name!r}")
            ok = False
    return Cost(weight, multipliers) if ok else None


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


_ANALYSED = "protection.analysis"


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
        parsed = op.parsed
        if parsed is not None and not op.variables:
            # The document alone decides: kept with it, for as long as the
            # engine's document cache keeps it (no key to build per request).
            memo = (self, op.operation_name)
            found = parsed.derived.get(memo)
            if found is None:
                found = parsed.derived[memo] = self._analyse(op)
            return found
        # Kept on the operation too: the limits step and the metrics step both ask.
        found = op.state.get(_ANALYSED)
        if found is not None:
            return found
        key = self.key(op)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        else:
            found = self._cache[key] = self._analyse(op)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        op.state[_ANALYSED] = found
        return found

    def _analyse(self, op: Any) -> tuple[int, int, str | None]:
        view = op.document
        self.computed += 1
        return (view.depth, self.model.cost(view), op.operation_name or view.operation_name)


ANALYSIS: web.AppKey[Analysis] = web.AppKey("plugboard.protection.analysis", Analysis)


def operation_steps(app: Any, config: Any) -> list[Any]:
    """The plugin's limits step: request policies and ``@rateLimit`` (:mod:`.operations`), then depth, cost and budget."""
    from plugboard.plugins.protection.directive import read_rate_limits
    from plugboard.plugins.protection.limiter import LIMITER, Policy, merge_header, ratelimit_header
    from plugboard.plugins.protection.metrics import METRICS
    from plugboard.plugins.protection.operations import FieldLimits, RequestChecks

    limits = config.graphql
    # Read here, once the schema is composed: a bad @cost or @rateLimit fails
    # start-up naming its SDL file and line.
    fragments = app[keys.COMPOSED_SCHEMA].fragments
    costs = read_costs(fragments)
    field_limits = read_rate_limits(fragments)
    analysis = Analysis(CostModel(costs, limits))
    app[ANALYSIS] = analysis
    limiter = app[LIMITER]
    metrics = app.get(METRICS)
    budget = config.budget
    budgets = {name: Policy("cost", most, budget.window) for name, most in budget.key_overrides.items()}
    default_budget = Policy("cost", budget.max, budget.window)
    # Keys' own budgets (from their records), one Policy per distinct amount.
    own_budgets: dict[int, Policy] = {}

    async def spend(op: Any, cost: int) -> None:
        # The budget: the operation's cost from the client's window (the
        # first refused operation is not charged).
        context = op.context
        api_key = getattr(context, "api_key", None)
        policy = default_budget
        if api_key is not None:
            own = api_key.limits.cost_budget
            if own is not None:
                policy = own_budgets.get(own) or own_budgets.setdefault(own, Policy("cost", own, budget.window))
            elif budgets:
                policy = budgets.get(api_key.prefix) or budgets.get(api_key.id) or default_budget
        state = await limiter.count_operation(f"cost:{limiter.identity_key(context)}", policy, cost=max(cost, 1))
        if state is None:
            return
        merge_header(op.response_headers, "RateLimit-Policy", policy.header)
        merge_header(op.response_headers, "RateLimit", ratelimit_header("cost", state))
        if not state.allowed:
            raise limiter.refused(
                policy,
                state,
                f"The query costs {cost}; {state.remaining} of this window's budget of {policy.max} is left",
                cost=cost,
                remaining=state.remaining,
                budget=policy.max,
            )

    def check_query(op: Any) -> int:
        """Refuse a document over the depth or cost limit; its cost."""
        depth, cost, name = analysis.of(op)
        if metrics is not None:
            metrics.cost.observe((metrics.operation_label(name),), cost)
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
        return cost

    analyse = bool(limits.max_depth or limits.max_complexity or budget.enabled)
    fields = FieldLimits(field_limits, analysis.key) if field_limits else None
    checks = RequestChecks(limiter, fields, requests_enabled=config.requests.enabled) if config.requests.enabled or fields is not None else None

    async def counted_limits(op: Any, call_next: Any) -> Any:
        counted = await checks.before(op) if checks is not None else None
        if analyse:
            cost = check_query(op)
            if budget.enabled:
                await spend(op, cost)
        if counted is None:
            return await call_next(op)
        result = await call_next(op)
        await checks.after(op, counted, result)
        return result

    # One step, not two: each step is a layer every operation goes through.
    # And a plain function, not a coroutine, when nothing needs the store (an
    # anonymous HTTP request was counted by the middleware): then it adds no
    # coroutine that every await of the operation's resolvers passes through.
    def protection_limits(op: Any, call_next: Any) -> Any:
        if budget.enabled or (checks is not None and checks.counts(op)):
            return counted_limits(op, call_next)
        if analyse:
            check_query(op)
        return call_next(op)

    return [protection_limits]
