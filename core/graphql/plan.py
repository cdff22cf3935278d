"""Execution plans: one validated operation resolved once into flat, per-type field lists.

Tartiflette collects fields, looks up field definitions and builds output
coercer chains again for every object of every request. A plan does that
work once per document (and per outcome of its ``@skip``/``@include``
directives): for each selection set and each runtime object type, the
ordered response keys with their field definition, resolver and a small
tree saying how to complete the value (non-null, list, scalar, enum, object,
abstract). ``plugboard.graphql.planned`` walks it.

Anything the walk does not reproduce exactly makes planning raise
:class:`Unsupported`, and the engine runs Tartiflette's own executor for
that document: introspection fields, directives with execution hooks (on
the schema, its fields, types or enum values, or custom ones in the
document).

This module reads Tartiflette's schema objects and AST; like ``engine.py``
it is part of the engine (see tests/core/graphql/test_tartiflette_confined.py).
"""

from __future__ import annotations

from typing import Any

from tartiflette.language.ast import (
    ArgumentNode,
    FieldNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    ListValueNode,
    ObjectFieldNode,
    ObjectValueNode,
    VariableNode,
)
from tartiflette.scalar.builtins.id import ScalarID
from tartiflette.scalar.builtins.string import ScalarString
from tartiflette.types.helpers.get_directive_instances import compute_directive_nodes

#: Directives a document may use on selections: evaluated before planning.
CONDITIONAL_DIRECTIVES = frozenset({"skip", "include"})
#: The hooks the planned walk does not run; an element whose directives
#: implement one of them is left to Tartiflette.
_FIELD_HOOKS = ("on_field_execution",)
_OUTPUT_HOOKS = ("on_pre_output_coercion",)

#: A plan bigger than this is not made (Tartiflette walks only what data reaches).
MAX_PLANNED_FIELDS = 20_000

# Completion kinds.
NON_NULL, LIST, SCALAR, ENUM, OBJECT, ABSTRACT = range(6)


class Unsupported(Exception):
    """Raised while planning: this document runs through Tartiflette's executor."""


class Completion:
    """How a field's value is completed for one level of its type."""

    __slots__ = ("kind", "inner", "gql_type", "non_null", "coerce", "children", "object_plan")

    def __init__(self, kind: int, gql_type: Any, inner: "Completion | None" = None) -> None:
        self.kind = kind
        self.gql_type = gql_type
        self.inner = inner
        #: Whether the type at this level is non-null (errors bubble past it).
        self.non_null = kind == NON_NULL
        #: SCALAR: the scalar's ``coerce_output``.
        self.coerce = gql_type.coerce_output if kind == SCALAR else None
        #: OBJECT / ABSTRACT: runtime type name -> TypePlan (filled by the planner).
        self.children: dict[str, TypePlan] = {}
        #: OBJECT, or NON_NULL of an OBJECT: its one TypePlan (a non-null
        #: value is completed by executing it directly).
        self.object_plan: TypePlan | None = inner.object_plan if kind == NON_NULL and inner is not None else None


class FieldPlan:
    """One response key of a selection set for one runtime type."""

    __slots__ = (
        "key", "name", "definition", "field_nodes", "parent_type", "resolver", "completion",
        "has_arguments", "cache_arguments", "parent_concurrently", "list_concurrently",
        "typename", "dict_safe", "dict_fast", "str_identity", "literal_arguments", "constant_arguments",
        "completion_coerce", "needs_info", "abstract_resolver_key",
    )

    def __init__(self, key: str, definition: Any, field_nodes: list[Any], parent_type: Any, completion: Completion) -> None:
        self.key = key
        self.name = definition.name
        self.definition = definition
        self.field_nodes = field_nodes
        self.parent_type = parent_type
        self.completion = completion
        raw = definition.raw_resolver
        self.typename = definition.name == "__typename"
        #: None: Tartiflette's default resolver (attribute, then key).
        self.resolver = None if self.typename else raw
        self.has_arguments = bool(definition.arguments) and field_nodes[0].arguments is not None
        # Coerced arguments are reused within a request unless an argument
        # directive could make them depend on more than the variables.
        self.cache_arguments = not any(getattr(a, "directives", None) for a in definition.arguments.values())
        self.parent_concurrently = bool(definition.parent_concurrently)
        self.list_concurrently = bool(definition.list_concurrently)
        #: A dict parent can be read with ``.get``: the default resolver tries
        #: ``getattr`` first, which finds dict methods (``items``, ``keys``...).
        self.dict_safe = not hasattr(dict, self.name)
        inner = completion.inner if completion.kind == NON_NULL else completion
        # The value needs only a scalar's ``coerce_output`` (and a null check).
        scalar = inner.kind == SCALAR
        self.completion_coerce = inner.coerce
        #: On a dict parent, the value is a key read and a scalar coercion.
        self.dict_fast = scalar and self.resolver is None and self.dict_safe and not self.has_arguments
        #: The built-in String or ID: a ``str`` is its own output.
        self.str_identity = scalar and getattr(inner.coerce, "__func__", None) in _STR_IDENTITY
        #: No variables in the arguments and no argument directives: they
        #: coerce to the same values on every request (kept by the executor).
        self.literal_arguments = self.has_arguments and self.cache_arguments and not _has_variables(field_nodes[0].arguments)
        self.constant_arguments: dict[str, Any] | None = None
        # Tartiflette builds one ``info`` per field; we build it when a
        # resolver or a type resolver (abstract types) will see it.
        self.needs_info = self.resolver is not None or _has_abstract(completion)
        self.abstract_resolver_key = f"{parent_type.name}.{definition.name}"


#: The built-in scalars whose ``coerce_output`` returns a ``str`` unchanged.
_STR_IDENTITY = (ScalarString.coerce_output, ScalarID.coerce_output)


def _has_variables(node: Any) -> bool:
    if isinstance(node, VariableNode):
        return True
    if isinstance(node, (list, tuple)):
        return any(_has_variables(n) for n in node)
    if isinstance(node, ArgumentNode | ObjectFieldNode):
        return _has_variables(node.value)
    if isinstance(node, ListValueNode):
        return _has_variables(node.values)
    if isinstance(node, ObjectValueNode):
        return _has_variables(node.fields)
    return False


def _has_list(completion: Completion | None) -> bool:
    while completion is not None:
        if completion.kind == LIST:
            return True
        completion = completion.inner
    return False


def _has_abstract(completion: Completion | None) -> bool:
    while completion is not None:
        if completion.kind == ABSTRACT:
            return True
        completion = completion.inner
    return False


class TypePlan:
    """The collected fields of a selection set for one runtime object type."""

    __slots__ = ("object_type", "fields", "keys", "checks")

    def __init__(self, object_type: Any, fields: list[FieldPlan], checks: list[Any]) -> None:
        self.object_type = object_type
        self.fields = fields
        self.keys = [f.key for f in fields]
        #: The selections whose @skip/@include Tartiflette evaluates, in its
        #: order, each time it collects this selection for an object. Their
        #: outcome is in the plan already; the executor replays the calls only
        #: where tasks interleave (concurrent coercion), because each one is a
        #: suspension point that decides which task records its errors first.
        self.checks = checks


def conditional_nodes(operation: Any, fragments: dict[str, Any]) -> list[Any]:
    """The selections of an operation carrying directives, in a stable order.

    Raises :class:`Unsupported` for directives other than ``@skip`` and
    ``@include``, or for directives on the operation or fragment definitions.
    """
    if operation.directives:
        raise Unsupported("directives on the operation")
    found: list[Any] = []
    seen_fragments: set[str] = set()

    def walk(selection_set: Any) -> None:
        for sel in selection_set.selections:
            if sel.directives:
                for directive in sel.directives:
                    if directive.name.value not in CONDITIONAL_DIRECTIVES:
                        raise Unsupported(f"directive @{directive.name.value} in the document")
                found.append(sel)
            if isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                if name in seen_fragments:
                    continue
                seen_fragments.add(name)
                fragment = fragments[name]
                if fragment.directives:
                    raise Unsupported("directives on a fragment definition")
                walk(fragment.selection_set)
            elif sel.selection_set is not None:
                walk(sel.selection_set)

    walk(operation.selection_set)
    return found


class Planner:
    """Builds the plan of one operation, for one outcome of its conditional directives."""

    def __init__(self, schema: Any, operation: Any, fragments: dict[str, Any], included: dict[int, bool]) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments = fragments
        #: id(selection node) -> whether its @skip/@include let it in.
        self.included = included
        self._checked: dict[int, None] = {}
        # Plans shared by equal (type, selection sets): a fragment spread in
        # many places is planned once, so a document whose expansion is
        # exponential (fragments spreading fragments twice) plans in linear time.
        self._plans: dict[tuple[str, tuple[int, ...]], TypePlan] = {}
        self._fields = 0

    def root(self) -> TypePlan:
        root_type = self.schema.get_operation_root_type(self.operation)
        if self.schema._schema_directives:  # noqa: SLF001 - schema-level hooks wrap all execution
            self._check_hooks(self.schema._schema_directives, ("on_schema_execution", "on_schema_subscription"))
        return self.type_plan(root_type, [self.operation.selection_set])

    @property
    def interleaved(self) -> bool:
        """Whether tasks of one execution of this plan can interleave.

        Tartiflette runs fields with ``parent_concurrently`` (every field with
        a registered resolver, by Tartiflette's default, plus the rest under
        ``coerce_parent_concurrently``) as tasks, and list items as tasks under
        ``coerce_list_concurrently``. With two such tasks alive, which records
        an error first depends on every suspension point on their way.
        """
        for plan in self._plans.values():
            if sum(1 for f in plan.fields if f.parent_concurrently) > 1:
                return True
            if any(f.list_concurrently and _has_list(f.completion) for f in plan.fields):
                return True
        return False

    def type_plan(self, object_type: Any, selection_sets: list[Any]) -> TypePlan:
        key = (object_type.name, tuple(id(s) for s in selection_sets))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._type_plan(object_type, selection_sets)
        return plan

    def _type_plan(self, object_type: Any, selection_sets: list[Any]) -> TypePlan:
        self._check_element(object_type, _OUTPUT_HOOKS)
        collected: dict[str, list[Any]] = {}
        visited: set[str] = set()
        checks: list[Any] = []
        for selection_set in selection_sets:
            self._collect(object_type, selection_set, collected, visited, checks)
        fields = []
        for key, nodes in collected.items():
            name = nodes[0].name.value
            if name in ("__schema", "__type"):
                raise Unsupported("introspection")
            try:
                definition = self.schema.get_field_by_name(f"{object_type.name}.{name}")
            except Exception:  # noqa: BLE001 - as Tartiflette's get_field_definition: no such field
                continue  # Tartiflette leaves the key out (validation rules this out)
            self._check_element(definition, _FIELD_HOOKS)
            self._fields += 1
            if self._fields > MAX_PLANNED_FIELDS:
                raise Unsupported(f"more than {MAX_PLANNED_FIELDS} planned fields")
            completion = self.completion(definition.graphql_type, nodes)
            fields.append(FieldPlan(key, definition, nodes, object_type, completion))
        return TypePlan(object_type, fields, checks)

    def completion(self, gql_type: Any, nodes: list[Any]) -> Completion:
        if gql_type.is_non_null_type:
            return Completion(NON_NULL, gql_type, self.completion(gql_type.wrapped_type, nodes))
        if gql_type.is_list_type:
            return Completion(LIST, gql_type, self.completion(gql_type.wrapped_type, nodes))
        kind = getattr(gql_type, "kind", None)
        self._check_element(gql_type, _OUTPUT_HOOKS)
        if kind == "SCALAR":
            return Completion(SCALAR, gql_type)
        if kind == "ENUM":
            for value in gql_type.values:
                self._check_element(value, _OUTPUT_HOOKS)
            return Completion(ENUM, gql_type)
        selection_sets = [n.selection_set for n in nodes if n.selection_set]
        if kind == "OBJECT":
            completion = Completion(OBJECT, gql_type)
            completion.children[gql_type.name] = completion.object_plan = self.type_plan(gql_type, selection_sets)
            return completion
        if kind in ("INTERFACE", "UNION"):
            completion = Completion(ABSTRACT, gql_type)
            for possible in gql_type.possibleTypes:
                completion.children[possible.name] = self.type_plan(possible, selection_sets)
            return completion
        raise Unsupported(f"output type kind {kind}")

    def _collect(
        self, runtime_type: Any, selection_set: Any, fields: dict[str, list[Any]], visited: set[str], checks: list[Any]
    ) -> None:
        # Tartiflette's collect_fields, with @skip/@include already decided.
        for sel in selection_set.selections:
            if isinstance(sel, FragmentSpreadNode) and sel.name.value in visited:
                continue  # before its directives, as Tartiflette's `or` short-circuits
            if sel.directives:
                checks.append(sel)
                if not self.included[id(sel)]:
                    continue
            if isinstance(sel, FieldNode):
                fields.setdefault(sel.alias.value if sel.alias else sel.name.value, []).append(sel)
            elif isinstance(sel, InlineFragmentNode):
                if not self._condition_matches(sel, runtime_type):
                    continue
                self._collect(runtime_type, sel.selection_set, fields, visited, checks)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                visited.add(name)
                fragment = self.fragments.get(name)
                if not fragment or not self._condition_matches(fragment, runtime_type):
                    continue
                self._collect(runtime_type, fragment.selection_set, fields, visited, checks)

    def _condition_matches(self, node: Any, runtime_type: Any) -> bool:
        condition = node.type_condition
        if not condition:
            return True
        conditional = self.schema.find_type(condition.name.value)
        if conditional is runtime_type:
            return True
        return conditional.is_abstract_type and conditional.is_possible_type(runtime_type)

    def _check_element(self, element: Any, hooks: tuple[str, ...]) -> None:
        if id(element) in self._checked:
            return
        directives = getattr(element, "directives", None)
        if directives:
            self._check_hooks(directives, hooks)
        self._checked[id(element)] = None

    def _check_hooks(self, directives: Any, hooks: tuple[str, ...]) -> None:
        for node in directives:
            for directive in compute_directive_nodes(self.schema, [node]):
                for hook in hooks:
                    if hook in directive["callables"]:
                        raise Unsupported(f"@{node.name.value} has an {hook} hook")
