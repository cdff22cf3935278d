"""A read-only view of an operation's document, for operation steps to walk.

Limit, cache and analytics steps need to know what a client asked for (which
fields, how deep, with which arguments) without touching Tartiflette's AST.
``operation.document`` gives them a :class:`DocumentView`: plain frozen
objects, fragments expanded, variables applied, every field with the type
the schema declares for it. Nothing here imports Tartiflette: the engine
(the only module that does) turns the parsed document into the templates at
the bottom of this module once per document and operation name; a template
is bound to an operation's variables the first time a step reads
``operation.document``, so steps that never look pay nothing.

Example, a depth and cost limit::

    async def limit(operation, call_next):
        view = operation.document
        if view.depth > 10:
            return operation.error_result("too deep", "QUERY_TOO_DEEP")
        cost = sum(
            sel.arguments.get("first", 10) if sel.type.is_list else 1
            for sel, depth, path in view.walk()
        )
        ...
        return await call_next(operation)
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Iterator, Literal, Mapping, Union

import attrs

Kind = Literal["scalar", "object", "interface", "union", "enum"]
OperationType = Literal["query", "mutation", "subscription"]
#: ``(selection, depth, path)`` as yielded by ``walk()``: root fields have
#: depth 1; ``path`` is the response keys from the root down to the selection.
Visit = tuple["Selection", int, tuple[str, ...]]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen
class TypeRef:
    """A field's return type as the schema declares it.

    ``[Book!]!`` is ``TypeRef("Book", "object", is_list=True, non_null=True,
    sdl="[Book!]!")``: ``name`` and ``kind`` describe the named type inside
    the list and non-null wrappers; ``non_null`` is the outermost ``!``.
    """

    name: str
    kind: Kind
    is_list: bool = False
    non_null: bool = False
    sdl: str = ""

    @property
    def is_leaf(self) -> bool:
        """A scalar or enum: the field has no selections of its own."""
        return self.kind in ("scalar", "enum")

    @property
    def is_abstract(self) -> bool:
        """An interface or union: children may carry a ``type_condition``."""
        return self.kind in ("interface", "union")

    def __str__(self) -> str:
        return self.sdl or self.name


@attrs.frozen
class Directive:
    """A directive as used in the document, e.g. ``@include(if: true)``, variables applied."""

    name: str
    arguments: Mapping[str, Any] = _EMPTY


@attrs.frozen
class Selection:
    """One field selection, with its fragments already expanded into ``selections``.

    :ivar name: the schema field name (``books``).
    :ivar alias: the alias the client gave (``b: books``), or None.
    :ivar arguments: argument values with variables applied, plus the
        schema's defaults for arguments the client left out. Values are as
        written, not coerced by their scalar (an ``ID`` written ``7`` is the
        int 7); enum values are their names, input objects are dicts. Treat
        them as read-only.
    :ivar directives: the directives on the field, in document order.
    :ivar parent_type: the type the field is selected on (an inline
        fragment's or fragment's type condition where there is one).
    :ivar type: the field's return type.
    :ivar type_condition: the type condition of the nearest enclosing
        fragment or inline fragment, None for a field written directly in
        its parent's selection set. Cost analysis uses it to tell the fields
        selected on only some of an interface's or union's types.
    :ivar selections: the child selections, in document order. Selections
        are listed as written: two with the same response key are not
        merged (execution merges them), and ones excluded by
        ``@skip``/``@include`` are left out. A fragment spread in several
        places gives the same ``Selection`` objects at each place: tell them
        apart by the path ``walk()`` yields, not by identity.
    """

    name: str
    alias: str | None
    arguments: Mapping[str, Any]
    directives: tuple[Directive, ...]
    parent_type: str
    type: TypeRef
    type_condition: str | None = None
    selections: tuple["Selection", ...] = ()

    @property
    def response_key(self) -> str:
        """The key of this field in the result: the alias, else the name."""
        return self.alias or self.name

    @property
    def coordinate(self) -> str:
        """``Parent.field`` (schema coordinate), e.g. for per-field costs."""
        return f"{self.parent_type}.{self.name}"

    def walk(self) -> Iterator[Visit]:
        """This selection and everything below it, depth-first; this one has depth 1."""
        return _walk((self,), 1, ())


@attrs.frozen
class Counts:
    """What the view holds, for limits on document size.

    ``fields``, ``aliases``, ``directives`` and ``fragments`` (fragment
    spreads and inline fragments) are counted in the expanded selection tree,
    as many times as a fragment is spread; ``tokens`` counts the lexical
    tokens of the whole document text (punctuators, names, numbers, strings;
    not whitespace, commas or comments).
    """

    fields: int = 0
    aliases: int = 0
    directives: int = 0
    fragments: int = 0
    tokens: int = 0


@attrs.frozen
class DocumentView:
    """The operation a request runs: type, name, and the selection tree.

    :ivar operation_type: ``"query"``, ``"mutation"`` or ``"subscription"``.
    :ivar operation_name: the operation's name in the document, or None.
    :ivar root_type: the schema type the root fields are selected on
        (``Query``, ``Mutation``, ``Subscription``).
    :ivar directives: the directives on the operation itself.
    :ivar selections: the root field selections.
    :ivar variables: the request's variables with the operation's variable
        defaults applied.
    :ivar depth: the deepest field's level: ``{ a }`` is 1, ``{ a { b } }``
        is 2 (``__typename`` counts as a field).
    :ivar counts: see :class:`Counts`.
    """

    operation_type: OperationType
    operation_name: str | None
    root_type: str
    directives: tuple[Directive, ...]
    selections: tuple[Selection, ...]
    variables: Mapping[str, Any]
    depth: int
    counts: Counts

    def walk(self) -> Iterator[Visit]:
        """Every field selection, depth-first in document order, as ``(selection, depth, path)``."""
        return _walk(self.selections, 1, ())


def _walk(selections: tuple[Selection, ...], depth: int, path: tuple[str, ...]) -> Iterator[Visit]:
    # An explicit stack: documents may be deeper than is comfortable for
    # recursive generators, and a flat loop is cheaper per node.
    stack = [(s, depth, path) for s in reversed(selections)]
    while stack:
        sel, d, p = stack.pop()
        here = (*p, sel.response_key)
        yield sel, d, here
        for child in reversed(sel.selections):
            stack.append((child, d + 1, here))


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

# GraphQL's lexical grammar; the ignored tokens (whitespace, commas, BOM,
# comments) match the first, uncaptured alternatives. The document has
# already parsed, so the pattern need not reject anything.
_LEXER = re.compile(
    r"""[\s,\ufeff]+|\#[^\n\r]*|("""
    r'"""(?:\\"""|[^"]|"(?!""))*"""'  # block string
    r'|"(?:\\.|[^"\\\n\r])*"'  # string
    r"|\.\.\.|[!$&():=@\[\]{|}]"  # punctuators
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"  # int and float
    r"|[_A-Za-z][_0-9A-Za-z]*"  # names
    r"|.)",  # anything else is one token: never lose text
    re.DOTALL,
)


def tokenize(source: str) -> list[str]:
    """The document's lexical tokens, in order, without ignored text."""
    return [t for t in _LEXER.findall(source) if t]


def normalize(source: str) -> str:
    """The document's tokens joined by single spaces: equal for documents that differ only in layout."""
    return " ".join(tokenize(source))


# --------------------------------------------------------------------------
# Templates: what the engine builds once per document and operation name
# --------------------------------------------------------------------------


@attrs.frozen
class Var:
    """A variable's place in an argument value, filled in at bind time."""

    name: str


#: ``(name, arguments)``; argument values may hold :class:`Var`.
DirectiveTemplate = tuple[str, tuple[tuple[str, Any], ...]]
#: "No value": an argument without a schema default, an unset variable.
MISSING: Any = object()


@attrs.frozen
class FieldTemplate:
    """A field as written; ``arguments`` holds ``(name, value, schema default or MISSING)``."""

    name: str
    alias: str | None
    arguments: tuple[tuple[str, Any, Any], ...]
    directives: tuple[DirectiveTemplate, ...]
    parent_type: str
    type: TypeRef
    children: tuple["Node", ...] = ()


@attrs.frozen(eq=False)
class FragmentBody:
    """A fragment's or inline fragment's selections; spreads of one fragment share one body."""

    type_condition: str | None
    children: tuple["Node", ...]


@attrs.frozen
class FragmentTemplate:
    """A fragment spread (``name`` set) or an inline fragment, not yet expanded."""

    name: str | None
    directives: tuple[DirectiveTemplate, ...]
    body: FragmentBody


Node = Union[FieldTemplate, FragmentTemplate]


@attrs.define
class OperationTemplate:
    """One operation of a document, variables not yet applied; cached by the engine."""

    operation_type: OperationType
    operation_name: str | None
    root_type: str
    directives: tuple[DirectiveTemplate, ...]
    children: tuple[Node, ...]
    variable_defaults: Mapping[str, Any]
    uses_variables: bool
    tokens: int
    _view: DocumentView | None = attrs.field(default=None, init=False, repr=False)

    def bind(self, variables: Mapping[str, Any] | None) -> DocumentView:
        """The view for one request's variables (built once for documents without variables)."""
        if self._view is not None:
            return self._view
        values = {**self.variable_defaults, **(variables or {})} if self.uses_variables else {}
        binder = _Binder(values)
        selections, stats = binder.collect(self.children, None)
        directives = binder.directives(self.directives)
        view = DocumentView(
            operation_type=self.operation_type,
            operation_name=self.operation_name,
            root_type=self.root_type,
            directives=directives,
            selections=selections,
            variables=MappingProxyType(values),
            depth=stats[4],
            counts=Counts(stats[0], stats[1], stats[2] + len(directives), stats[3], self.tokens),
        )
        if not self.uses_variables:
            # The same for every request: keep it with the cached document.
            self._view = view
        return view


# (fields, aliases, directives, fragments, height) of a selection set
_Stats = tuple[int, int, int, int, int]


class _Binder:
    """Expands templates into selections for one set of variable values."""

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.variables = variables
        # A fragment spread many times expands to equal selections each
        # time: build them once (documents that spread fragments inside
        # fragments would otherwise cost exponential time here).
        self.memo: dict[tuple[int, str | None], tuple[tuple[Selection, ...], _Stats]] = {}

    def collect(self, nodes: tuple[Node, ...], type_condition: str | None) -> tuple[tuple[Selection, ...], _Stats]:
        out: list[Selection] = []
        fields = aliases = directives = fragments = height = 0
        for node in nodes:
            dirs = self.directives(node.directives)
            if _excluded(dirs):
                continue
            directives += len(dirs)
            if isinstance(node, FragmentTemplate):
                body = node.body
                condition = body.type_condition or type_condition
                key = (id(body), condition)
                done = self.memo.get(key)
                if done is None:
                    done = self.memo[key] = self.collect(body.children, condition)
                sels, (f, a, d, fr, h) = done
                out.extend(sels)
                fields, aliases, directives, fragments = fields + f, aliases + a, directives + d, fragments + fr + 1
                height = max(height, h)
                continue
            children, (f, a, d, fr, h) = self.collect(node.children, None) if node.children else ((), (0, 0, 0, 0, 0))
            out.append(
                Selection(
                    node.name,
                    node.alias,
                    self.arguments(node.arguments),
                    dirs,
                    node.parent_type,
                    node.type,
                    type_condition,
                    children,
                )
            )
            fields += 1 + f
            aliases += (node.alias is not None) + a
            directives += d
            fragments += fr
            height = max(height, 1 + h)
        return tuple(out), (fields, aliases, directives, fragments, height)

    def arguments(self, args: tuple[tuple[str, Any, Any], ...]) -> Mapping[str, Any]:
        if not args:
            return _EMPTY
        out = {}
        for name, value, default in args:
            value = self.value(value)
            if value is MISSING:
                # An unset variable leaves the argument unset: the schema's
                # default applies, as in execution.
                value = default
            if value is not MISSING:
                out[name] = value
        return MappingProxyType(out)

    def directives(self, templates: tuple[DirectiveTemplate, ...]) -> tuple[Directive, ...]:
        if not templates:
            return ()
        return tuple(Directive(name, self.arguments(tuple((n, v, MISSING) for n, v in args))) for name, args in templates)

    def value(self, value: Any) -> Any:
        if isinstance(value, Var):
            return self.variables.get(value.name, MISSING)
        if isinstance(value, list):
            return [None if (v := self.value(item)) is MISSING else v for item in value]
        if isinstance(value, dict):
            return {k: v for k, item in value.items() if (v := self.value(item)) is not MISSING}
        return value


def _excluded(directives: tuple[Directive, ...]) -> bool:
    for d in directives:
        if d.name == "skip" and d.arguments.get("if") is True:
            return True
        if d.name == "include" and d.arguments.get("if") is False:
            return True
    return False

