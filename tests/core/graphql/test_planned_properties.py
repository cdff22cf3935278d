"""Property tests: generated documents give identical JSON under both executors.

The schema is the composed schema of every built-in plugin and the books
example. Every object field gets a "chaos" resolver: deterministic in the
field's path and arguments (so both executors see the same values), it
sometimes raises a client error, sometimes a bug (masked), sometimes returns
null, and otherwise returns a value of the field's type, or now and then one
the type refuses (a bad enum value, an unknown ``_typename``, a string for an
``Int``). hypothesis-graphql writes the queries; we then rewrite them with
aliases, inline fragments, named fragments, arguments moved into variables,
and ``@include``/``@skip`` on literals and variables.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import random
from pathlib import Path

import pytest

graphql = pytest.importorskip("graphql")
hypothesis_graphql = pytest.importorskip("hypothesis_graphql")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from plugboard import keys  # noqa: E402
from plugboard.app import create_app  # noqa: E402
from plugboard.graphql.differential import compare_results  # noqa: E402
from plugboard.graphql.engine import Contribution, EngineOptions  # noqa: E402
from plugboard.graphql.errors import GraphQLError  # noqa: E402
from plugboard.settings import Settings  # noqa: E402

PLUGINS = ["realtime", "jobs", "email", "cache", "uploads", "protection", "books"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def composed(root: Path):
    """(app engine, graphql-core schema) of the composed schema."""
    app = create_app(Settings.from_mapping({"plugins": PLUGINS, "server": {"data_dir": str(root / "var")}}, root=root))
    engine = app[keys.ENGINE]
    sdl = engine.sdl
    # Tartiflette's built-in scalars are implicit; graphql-core needs them declared.
    extra = "".join(f"scalar {name}\n" for name in ("DateTime", "Date", "Time") if f"scalar {name}" not in sdl)
    return engine, graphql.build_schema(extra + sdl)


class Chaos:
    """Resolvers whose answers depend only on (seed, path, arguments)."""

    def __init__(self, schema: graphql.GraphQLSchema) -> None:
        self.schema = schema
        self.seed = 0

    def resolvers(self) -> dict[str, Contribution]:
        out = {}
        for name, gql_type in self.schema.type_map.items():
            if name.startswith("__") or not isinstance(gql_type, graphql.GraphQLObjectType):
                continue
            if gql_type in (self.schema.mutation_type, self.schema.subscription_type):
                continue
            for field_name in gql_type.fields:
                out[f"{name}.{field_name}"] = Contribution("chaos", self.resolver(gql_type.fields[field_name].type))
        return out

    def resolver(self, field_type):
        async def resolve(parent, args, context, info):
            key = json.dumps([self.seed, info.path.as_list(), args], sort_keys=True, default=str)
            rng = random.Random(hashlib.sha256(key.encode()).digest())
            roll = rng.random()
            if roll < 0.04:
                raise GraphQLError(f"chaos at {info.field_name}", "CHAOS")
            if roll < 0.07:
                raise RuntimeError("a bug, masked for clients")
            if roll < 0.14:
                return None
            if roll < 0.16:
                await asyncio.sleep(0)  # a real suspension now and then
            return self.value(field_type, rng)

        return resolve

    def value(self, gql_type, rng: random.Random):
        if isinstance(gql_type, graphql.GraphQLNonNull):
            return self.value(gql_type.of_type, rng)
        if isinstance(gql_type, graphql.GraphQLList):
            return [None if rng.random() < 0.1 else self.value(gql_type.of_type, rng) for _ in range(rng.randint(0, 3))]
        if isinstance(gql_type, graphql.GraphQLEnumType):
            return rng.choice([*gql_type.values, "NOT_A_VALUE"] if rng.random() < 0.1 else list(gql_type.values))
        if isinstance(gql_type, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType)):
            names = [t.name for t in self.schema.get_possible_types(gql_type)]
            return {"_typename": rng.choice(names + ["Query"]) if rng.random() < 0.1 else rng.choice(names or ["Query"])}
        if isinstance(gql_type, graphql.GraphQLObjectType):
            return {}
        if rng.random() < 0.05:
            return "not what the scalar wants"
        return {
            "Int": lambda: rng.randint(-1000, 1000),
            "Float": lambda: rng.random() * 100,
            "String": lambda: rng.choice(["a", "b", "ünï", ""]),
            "ID": lambda: str(rng.randint(1, 99)),
            "Boolean": lambda: rng.random() < 0.5,
            "DateTime": lambda: datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=rng.randint(0, 10**6)),
            "JSON": lambda: {"k": [1, "two", None]},
        }.get(gql_type.name, lambda: "x")()


class Rewriter:
    """Rewrites a generated query: aliases, fragments, variables, @include/@skip."""

    SIMPLE = ("Int", "Float", "String", "Boolean", "ID")

    def __init__(self, schema: graphql.GraphQLSchema, draw) -> None:
        self.schema = schema
        self.draw = draw
        self.fragments: list[str] = []
        self.variable_defs: list[str] = []
        self.variables: dict = {}

    def choice(self, n: int) -> int:
        return self.draw(st.integers(0, n - 1))

    def document(self, node: graphql.DocumentNode) -> str:
        [operation] = [d for d in node.definitions if isinstance(d, graphql.OperationDefinitionNode)]
        body = self.selection_set(operation.selection_set, self.schema.query_type)
        head = f"query Q({', '.join(self.variable_defs)})" if self.variable_defs else "query Q"
        return "\n".join([f"{head} {body}", *self.fragments])

    def selection_set(self, node, parent) -> str:
        return "{ " + " ".join(self.selection(s, parent) for s in node.selections) + " }"

    def selection(self, sel, parent) -> str:
        if isinstance(sel, graphql.InlineFragmentNode):
            condition = self.schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
            on = f" on {condition.name}" if sel.type_condition else ""
            return f"...{on}{self.directives()} {self.selection_set(sel.selection_set, condition)}"
        name = sel.name.value
        text = name
        if sel.alias or self.choice(4) == 0:
            text = f"{sel.alias.value if sel.alias else 'a' + str(len(self.variables) + len(self.fragments) + self.choice(50))}: {name}"
        field = parent.fields.get(name) if hasattr(parent, "fields") else None
        if sel.arguments:
            text += "(" + ", ".join(self.argument(a, field) for a in sel.arguments) + ")"
        text += self.directives()
        if sel.selection_set:
            child = graphql.get_named_type(field.type)
            text += " " + self.selection_set(sel.selection_set, child)
        wrap = self.choice(5)
        if wrap == 0:
            return f"... on {parent.name}{self.directives()} {{ {text} }}"
        if wrap == 1:
            fragment = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {fragment} on {parent.name} {{ {text} }}")
            return f"...{fragment}{self.directives()}"
        return text

    def argument(self, arg, field) -> str:
        literal = graphql.print_ast(arg.value)
        arg_def = field.args.get(arg.name.value) if field else None
        if arg_def is None or self.choice(2) or isinstance(arg.value, graphql.VariableNode):
            return f"{arg.name.value}: {literal}"
        named = graphql.get_named_type(arg_def.type)
        if not (isinstance(named, graphql.GraphQLEnumType) or named.name in self.SIMPLE):
            return f"{arg.name.value}: {literal}"
        value = graphql.value_from_ast(arg.value, arg_def.type)
        if value is graphql.Undefined:
            return f"{arg.name.value}: {literal}"
        var = f"v{len(self.variable_defs)}"
        self.variable_defs.append(f"${var}: {arg_def.type}")
        self.variables[var] = value
        return f"{arg.name.value}: ${var}"

    def directives(self) -> str:
        kind = self.choice(8)
        if kind >= 4:
            return ""
        name = "include" if kind % 2 else "skip"
        if kind < 2:
            return f" @{name}(if: {'true' if self.choice(2) else 'false'})"
        var = f"b{len(self.variable_defs)}"
        self.variable_defs.append(f"${var}: Boolean!")
        self.variables[var] = bool(self.choice(2))
        return f" @{name}(if: ${var})"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("properties")
    app_engine, schema = composed(root)
    chaos = Chaos(schema)
    loop = asyncio.new_event_loop()
    engines = {}
    for lists, parents in ((False, False), (True, True)):
        for executor in ("planned", "tartiflette"):
            options = EngineOptions(executor=executor, coerce_list_concurrently=lists, coerce_parent_concurrently=parents)
            engine = app_engine.with_resolvers(chaos.resolvers(), options)
            loop.run_until_complete(engine.cook())
            engines[(executor, lists)] = engine
    yield schema, chaos, engines, loop
    for engine in engines.values():
        engine.drop()
    loop.close()


def run_both(setup, document: str, variables: dict, concurrent: bool, operation_name: str | None = "Q") -> None:
    schema, chaos, engines, loop = setup
    planned, tartiflette = engines[("planned", concurrent)], engines[("tartiflette", concurrent)]
    parsed_p, parsed_t = planned.parse(document), tartiflette.parse(document)
    assert (parsed_p.errors is None) == (parsed_t.errors is None)
    if parsed_p.errors:
        return
    assert planned.executor_for(parsed_p, operation_name) == "planned"

    async def go(engine, parsed):
        return await engine.execute(parsed, operation_name=operation_name, context=None, variables=variables)

    for seed in range(3):
        chaos.seed = seed
        left = loop.run_until_complete(go(planned, parsed_p))
        right = loop.run_until_complete(go(tartiflette, parsed_t))
        compare_results(left, right, query=document, variables=variables)


def strategy(schema):
    return hypothesis_graphql.queries(schema, print_ast=lambda node: node, allow_x00=False)


def test_generated_queries(setup):
    schema = setup[0]

    @PROPERTY
    @given(strategy(schema), st.data(), st.booleans())
    def check(node, data, concurrent):
        rewriter = Rewriter(schema, data.draw)
        document = rewriter.document(node)
        run_both(setup, document, rewriter.variables, concurrent)

    check()


def test_generated_queries_as_generated(setup):
    schema = setup[0]

    @PROPERTY
    @given(strategy(schema))
    def check(node):
        run_both(setup, graphql.print_ast(node), {}, False, operation_name=None)

    check()
