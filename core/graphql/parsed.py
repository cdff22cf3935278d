"""A parsed document (:class:`ParsedDocument`) and what is derived from it once per distinct text.

The engine keeps these in its document cache (:mod:`.document_cache`); steps
and executors read the operation types, the normalised text and the
Tartiflette-free views (:mod:`.document`) built here from Tartiflette's AST.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
from tartiflette.language import ast as gql

from plugboard.graphql.document import MISSING, DirectiveTemplate, DocumentView, FieldTemplate, FragmentBody
from plugboard.graphql.document import FragmentTemplate, Node, OperationTemplate, TypeRef, Var, tokenize
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.limits import Shape


@attrs.define(frozen=True)
class ParsedDocument:
    """A parsed and validated document, or the errors that stopped it.

    The engine keeps these in an LRU keyed by the document text, so what is
    derived from one (tokens, per-operation view templates) is computed once
    per distinct document, not once per request.
    """

    document: Any
    errors: list[dict[str, Any]] | None
    source: str = ""
    schema: Any = attrs.field(default=None, repr=False, eq=False)
    #: What the structural limits measured (None for documents refused before).
    shape: Shape | None = attrs.field(default=None, repr=False, eq=False)
    _derived: dict[Any, Any] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def operations(self) -> list[tuple[str | None, str]]:
        """``(name, type)`` of each operation definition in the document."""
        if self.document is None:
            return []
        ops = []
        for node in self.document.definitions:
            op_type = getattr(node, "operation_type", None)
            if op_type is not None:
                ops.append((node.name.value if node.name else None, op_type))
        return ops

    @property
    def operation_types(self) -> dict[str | None, str]:
        """:meth:`operations` as a mapping, name to type, built once (every request reads it)."""
        types = self._derived.get("operation_types")
        if types is None:
            types = self._derived["operation_types"] = dict(self.operations())
        return types

    @property
    def introspection(self) -> bool:
        """The document selects ``__schema`` or ``__type`` (``__typename`` does not count)."""
        return self.shape is not None and self.shape.introspection

    @property
    def weight(self) -> int:
        """Estimated bytes this document holds in the cache (text and AST).

        Tartiflette's AST takes about 300 bytes per token; views derived
        later add to it, hence the margin.
        """
        tokens = self.shape.tokens if self.shape is not None else len(self.source) // 4
        return 2 * len(self.source) + _BYTES_PER_TOKEN * tokens

    @property
    def normalized(self) -> str:
        """The document text with layout, commas and comments dropped (see ``document.normalize``)."""
        return self._lexed()[0]

    @property
    def derived(self) -> dict[Any, Any]:
        """What executors and views derive from this document, kept as long as it is cached."""
        return self._derived

    def view(self, operation_name: str | None, variables: Mapping[str, Any] | None) -> DocumentView:
        """The Tartiflette-free view of one operation, ``variables`` applied."""
        template = self._derived.get(("operation", operation_name))
        if template is None:
            template = _TemplateBuilder(self.schema, self.document).operation(operation_name, self._lexed()[1])
            self._derived[("operation", operation_name)] = template
        return template.bind(variables)

    def _lexed(self) -> tuple[str, int]:
        # One lexer pass gives both the normalised text and the token count;
        # the token list itself is not kept (it would double what the LRU holds).
        lexed = self._derived.get("lexed")
        if lexed is None:
            tokens = tokenize(self.source)
            lexed = self._derived["lexed"] = (" ".join(tokens), len(tokens))
        return lexed


_BYTES_PER_TOKEN = 400


class _TemplateBuilder:
    """Tartiflette's AST and schema -> the templates of ``plugboard.graphql.document``."""

    def __init__(self, schema: Any, document: Any) -> None:
        self.schema = schema
        self.definitions = document.definitions
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, gql.FragmentDefinitionNode)}
        self.bodies: dict[str, FragmentBody] = {}
        self.types: dict[str, TypeRef] = {}

    def operation(self, name: str | None, tokens: int) -> OperationTemplate:
        node = next(
            d
            for d in self.definitions
            if isinstance(d, gql.OperationDefinitionNode) and (name is None or (d.name and d.name.value == name))
        )
        op_type = node.operation_type
        root_type = self.schema.get_operation_root_type(node)
        if root_type is None:
            # Tartiflette validates ``mutation { __typename }`` against a
            # schema without a Mutation type; a step looking at it is told.
            raise GraphQLError(f"the schema has no {op_type} type", "BAD_REQUEST")
        root = root_type.name
        defaults = {
            v.variable.name.value: _value(v.default_value)
            for v in node.variable_definitions or ()
            if v.default_value is not None
        }
        return OperationTemplate(
            operation_type=op_type,
            operation_name=node.name.value if node.name else None,
            root_type=root,
            directives=self.directives(node.directives),
            children=self.selection_set(node.selection_set, root),
            variable_defaults=defaults,
            uses_variables=bool(node.variable_definitions),
            tokens=tokens,
        )

    def selection_set(self, node: Any, parent: str) -> tuple[Node, ...]:
        out: list[Node] = []
        for sel in node.selections:
            if isinstance(sel, gql.FieldNode):
                out.append(self.field(sel, parent))
            elif isinstance(sel, gql.FragmentSpreadNode):
                name = sel.name.value
                body = self.bodies.get(name)
                if body is None:
                    fragment = self.fragments[name]
                    condition = fragment.type_condition.name.value
                    # Spreads of one fragment share its body; validation has
                    # ruled out cycles, so this recursion ends.
                    body = self.bodies[name] = FragmentBody(condition, self.selection_set(fragment.selection_set, condition))
                out.append(FragmentTemplate(name, self.directives(sel.directives), body))
            else:  # InlineFragmentNode
                condition = sel.type_condition.name.value if sel.type_condition else None
                body = FragmentBody(condition, self.selection_set(sel.selection_set, condition or parent))
                out.append(FragmentTemplate(None, self.directives(sel.directives), body))
        return tuple(out)

    def field(self, node: Any, parent: str) -> FieldTemplate:
        name = node.name.value
        if name == "__typename":  # not a field of interfaces in Tartiflette's schema
            definition, type_ref = None, TypeRef("String", "scalar", non_null=True, sdl="String!")
        else:
            definition = self.schema.get_field_by_name(f"{parent}.{name}")
            type_ref = self.type_ref(definition.graphql_type)
        given = {a.name.value: _value(a.value) for a in node.arguments or ()}
        declared = definition.arguments if definition is not None else {}
        arguments = [(n, v, _default(declared.get(n))) for n, v in given.items()]
        arguments += [(n, MISSING, d) for n, arg in declared.items() if n not in given and (d := _default(arg)) is not MISSING]
        children = self.selection_set(node.selection_set, type_ref.name) if node.selection_set else ()
        return FieldTemplate(
            name,
            node.alias.value if node.alias else None,
            tuple(arguments),
            self.directives(node.directives),
            parent,
            type_ref,
            children,
        )

    def type_ref(self, gql_type: Any) -> TypeRef:
        sdl = str(gql_type)
        ref = self.types.get(sdl)
        if ref is None:
            non_null, is_list, named = gql_type.is_non_null_type, False, gql_type
            while getattr(named, "is_wrapping_type", False):
                is_list = is_list or named.is_list_type
                named = named.gql_type if not isinstance(named.gql_type, str) else self.schema.find_type(named.gql_type)
            ref = self.types[sdl] = TypeRef(named.name, named.kind.lower(), is_list, non_null, sdl)
        return ref

    def directives(self, nodes: Any) -> tuple[DirectiveTemplate, ...]:
        return tuple((d.name.value, tuple((a.name.value, _value(a.value)) for a in d.arguments or ())) for d in nodes or ())


def _default(argument: Any) -> Any:
    if argument is None or argument.default_value is None:
        return MISSING
    return _value(argument.default_value)


def _value(node: Any) -> Any:
    """A value node as plain Python; variables become ``Var`` markers."""
    kind = type(node)
    if kind is gql.VariableNode:
        return Var(node.name.value)
    if kind is gql.ListValueNode:
        return [_value(v) for v in node.values]
    if kind is gql.ObjectValueNode:
        return {f.name.value: _value(f.value) for f in node.fields}
    if kind is gql.NullValueNode:
        return None
    convert = _NUMBERS.get(kind)  # strings, booleans and enums are as they are
    return convert(node.value) if convert else node.value


_NUMBERS: dict[type, Callable[[Any], Any]] = {gql.IntValueNode: int, gql.FloatValueNode: float}
