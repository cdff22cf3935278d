"""Structural limits on GraphQL documents, checked before Tartiflette sees them.

Tartiflette's parser and validation run on the event loop, recurse with the
document's nesting, and grow faster than linearly with some shapes (thousands
of fragments, thousands of aliases). A document that is too big, too deep or
too wide is refused here, on a document-cache miss, in one pass over the
lexer's tokens: linear time, no recursion, whatever the input. What is
counted (see :class:`LimitsConfig` for the settings, ``graphql.limits.*``):

- ``size``: the document text, in bytes (UTF-8), checked before lexing;
- ``tokens``: lexical tokens (punctuators, names, numbers, strings); lexing
  stops one token past the limit;
- ``depth``: field nesting, ``{ a }`` is 1, fragment spreads followed (and
  nesting of list/object values in arguments, which the parser also recurses
  on);
- ``aliases``, ``fields``, ``directives``: per operation, fragment spreads
  expanded (a fragment spread twice counts twice), summed over the
  document's operations;
- ``fragments``: fragment definitions, spreads and inline fragments in the
  text.

Each refusal is a :class:`~plugboard.graphql.errors.GraphQLError` whose
``extensions`` carry the ``code`` (below), the ``limit`` and, where it is
known exactly, the counted value (``actual``); transports answer it with a 400.
The protection plugin's cost analysis comes after these, on the parsed view.
"""

from __future__ import annotations

import re
from typing import Iterator

import attrs

from plugboard import validators
from plugboard.graphql.document import _LEXER
from plugboard.graphql.errors import GraphQLError
from plugboard.units import Size

#: ``extensions.code`` of each refusal.
CODES = {
    "size": "DOCUMENT_TOO_LARGE",
    "tokens": "TOO_MANY_TOKENS",
    "depth": "QUERY_TOO_DEEP",
    "aliases": "TOO_MANY_ALIASES",
    "fields": "TOO_MANY_FIELDS",
    "fragments": "TOO_MANY_FRAGMENTS",
    "directives": "TOO_MANY_DIRECTIVES",
}
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


@attrs.define(frozen=True, kw_only=True)
class LimitsConfig:
    """``graphql.limits:`` — structural limits on every document (0 turns one off).

    Defaults follow graphql-armor's and admit graphql-js's full introspection
    query (depth 13 with its ``ofType`` chain, about 300 tokens).
    """

    #: Document text, in bytes.
    size: Size = attrs.field(default=100 * 1024, validator=validators.non_negative)
    #: Lexical tokens in the document.
    tokens: int = attrs.field(default=10_000, validator=validators.non_negative)
    #: Field nesting, fragment spreads followed.
    depth: int = attrs.field(default=15, validator=validators.non_negative)
    #: Aliased fields, fragment spreads expanded.
    aliases: int = attrs.field(default=30, validator=validators.non_negative)
    #: Field selections, fragment spreads expanded.
    fields: int = attrs.field(default=1_000, validator=validators.non_negative)
    #: Fragment definitions, spreads and inline fragments.
    fragments: int = attrs.field(default=100, validator=validators.non_negative)
    #: Directive uses, fragment spreads expanded.
    directives: int = attrs.field(default=50, validator=validators.non_negative)
    #: Nesting of the JSON ``variables`` and ``extensions`` of a request.
    variables_depth: int = attrs.field(default=32, validator=validators.non_negative)


@attrs.frozen
class Shape:
    """What the pass measured: the numbers the limits compare with."""

    tokens: int
    depth: int
    aliases: int
    fields: int
    fragments: int
    directives: int
    #: A ``__schema`` or ``__type`` field appears (``__typename`` does not count).
    introspection: bool


def refuse(what: str, limit: int, actual: int | None = None, detail: str = "") -> GraphQLError:
    extensions = {"limit": limit}
    if actual is not None:
        extensions["actual"] = actual
    shown = actual if actual is not None else f"more than {limit}"
    message = f"the document has {shown} {detail or what}; the limit (graphql.limits.{what}) is {limit}"
    return GraphQLError(message, CODES[what], extensions=extensions)


def check_document(source: str, limits: LimitsConfig) -> Shape:
    """Measure ``source`` and raise GraphQLError for the first limit it exceeds."""
    if limits.size:
        # len() is characters; only encode when characters alone could exceed.
        size = len(source)
        if size * 4 > limits.size and (size := len(source.encode("utf-8", "surrogatepass"))) > limits.size:
            raise refuse("size", limits.size, size, "bytes")
    tokens = _tokens(source, limits.tokens)
    shape = _measure(tokens)
    for what in ("fragments", "depth", "aliases", "directives", "fields"):
        limit = getattr(limits, what)
        actual = getattr(shape, what)
        if limit and actual > limit:
            raise refuse(what, limit, actual, _DETAIL.get(what, what))
    return shape


def check_json_depth(value: object, limit: int, name: str) -> None:
    """Raise GraphQLError when the JSON ``value`` nests deeper than ``limit`` (iterative)."""
    if not limit or not isinstance(value, (dict, list)):
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise GraphQLError(
                f"'{name}' is nested more than {limit} levels deep; the limit (graphql.limits.variables_depth) is {limit}",
                "VARIABLES_TOO_DEEP",
                extensions={"limit": limit},
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


_DETAIL = {"depth": "levels of nesting", "fragments": "fragments (definitions, spreads and inline fragments)"}


# One match per token, ignored text (whitespace, commas, comments) included
# in the match before it: ``subn`` counts tokens in C without making a Python
# object per token. The same token grammar as plugboard.graphql.document.
_COUNTER = re.compile(
    r"""(?>(?:[\s,\ufeff]+|\#[^\n\r]*)*)(?:"""
    r"[_A-Za-z][_0-9A-Za-z]*"
    r"|[!$&():=@\[\]{|}]|\.\.\."
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r'|"""(?:\\"""|[^"]|"(?!""))*"""'
    r'|"(?:\\.|[^"\\\n\r])*"'
    r"|.)",
    re.DOTALL,
)


def count_tokens(source: str) -> int:
    """The number of lexical tokens in ``source``, counted in C."""
    # The sentinel token after a newline ends a trailing comment, which would
    # otherwise be rescanned from inside and its words counted.
    return _COUNTER.subn("", source + "\n}")[1] - 1


def _tokens(source: str, limit: int) -> list[str]:
    # A refused document costs one C-level scan and no garbage: a hostile
    # client sending token floods must not make the collector work for it.
    if limit and count_tokens(source) > limit:
        raise refuse("tokens", limit, None, "tokens")
    out: list[str] = []
    append = out.append
    for match in _LEXER.finditer(source):
        token = match.group(1)
        if token:
            append(token)
            if limit and len(out) > limit:
                raise refuse("tokens", limit, None, "tokens")
    return out


class _Unit:
    """One operation or fragment definition: its own counts and the fragments it spreads."""

    __slots__ = ("depth", "aliases", "fields", "directives", "spreads")

    def __init__(self) -> None:
        self.depth = self.aliases = self.fields = self.directives = 0
        #: (fragment name, field depth at the spread)
        self.spreads: list[tuple[str, int]] = []


def _measure(tokens: list[str]) -> Shape:
    operations: list[_Unit] = []
    fragments: dict[str, _Unit] = {}
    fragment_count = 0
    introspection = False
    unit: _Unit | None = None
    # Selection-set braces outside parentheses: True for a field's (or the
    # definition's) selection set, False for an inline fragment's, which
    # adds no field depth.
    braces: list[bool] = []
    field_depth = 0
    parens = 0
    value_depth = max_value_depth = 0
    inline_pending = False
    n = len(tokens)
    i = 0
    while i < n:
        t = tokens[i]
        if parens:
            # Arguments, variable definitions: only value nesting matters.
            if t == "(":
                parens += 1
            elif t == ")":
                parens -= 1
            elif t in ("{", "["):
                value_depth += 1
                if value_depth > max_value_depth:
                    max_value_depth = value_depth
            elif t in ("}", "]"):
                value_depth = max(0, value_depth - 1)
            elif t == "@" and unit is not None:
                unit.directives += 1
            i += 1
            continue
        if t == "(":
            parens = 1
            value_depth = 0
        elif t == "{":
            if not braces:
                if unit is None:  # anonymous query shorthand: { ... }
                    unit = _Unit()
                    operations.append(unit)
                braces.append(True)
                field_depth = 1
            elif inline_pending:
                braces.append(False)
                inline_pending = False
            else:
                braces.append(True)
                field_depth += 1
            if unit is not None and field_depth > unit.depth:
                unit.depth = field_depth
        elif t == "}":
            if braces and braces.pop():
                field_depth -= 1
            if not braces:
                unit = None
                field_depth = 0
        elif t == "@":
            if unit is not None:
                unit.directives += 1
            i += 1  # the directive's name
        elif not braces:
            # Between definitions: operation keywords, names, type conditions.
            if t == "fragment" and i + 1 < n:
                unit = _Unit()
                fragments.setdefault(tokens[i + 1], unit)
                fragment_count += 1
                i += 3 if i + 2 < n and tokens[i + 2] == "on" else 1  # name on Type
            elif t in ("query", "mutation", "subscription"):
                unit = _Unit()
                operations.append(unit)
        elif t == "...":
            fragment_count += 1
            nxt = tokens[i + 1] if i + 1 < n else ""
            if nxt == "on":
                inline_pending = True
                i += 2  # on TypeName
            elif nxt in ("@", "{"):
                inline_pending = True
            else:
                if unit is not None:
                    unit.spreads.append((nxt, field_depth))
                i += 1
        elif t[0] == "_" or t[0].isalpha():
            if i + 1 < n and tokens[i + 1] == ":":
                if unit is not None:
                    unit.aliases += 1
                i += 2  # the field's name follows the colon
                t = tokens[i] if i < n else ""
            if unit is not None:
                unit.fields += 1
            if t in INTROSPECTION_FIELDS:
                introspection = True
        i += 1
    resolved = _resolve(fragments)
    depth = aliases = fields = directives = 0
    for op in operations:
        d, a, f, di = _totals(op, resolved)
        depth = max(depth, d)
        aliases += a
        fields += f
        directives += di
    return Shape(n, max(depth, max_value_depth), aliases, fields, fragment_count, directives, introspection)


_Totals = tuple[int, int, int, int]  # depth, aliases, fields, directives
_CAP = 1 << 40  # counts through fragments spread in fragments grow exponentially: clamp


def _totals(unit: _Unit, resolved: dict[str, _Totals]) -> _Totals:
    depth, aliases, fields, directives = unit.depth, unit.aliases, unit.fields, unit.directives
    for name, at in unit.spreads:
        d, a, f, di = resolved.get(name, (0, 0, 0, 0))
        depth = max(depth, at - 1 + d)
        aliases = min(_CAP, aliases + a)
        fields = min(_CAP, fields + f)
        directives = min(_CAP, directives + di)
    return depth, aliases, fields, directives


def _resolve(fragments: dict[str, _Unit]) -> dict[str, _Totals]:
    """Each fragment's totals with its spreads expanded; iterative, cycles counted once."""
    resolved: dict[str, _Totals] = {}
    visiting: set[str] = set()
    for root in fragments:
        if root in resolved:
            continue
        stack: list[tuple[str, Iterator[tuple[str, int]]]] = [(root, iter(fragments[root].spreads))]
        visiting.add(root)
        while stack:
            name, children = stack[-1]
            for child, _at in children:
                if child in fragments and child not in resolved and child not in visiting:
                    visiting.add(child)
                    stack.append((child, iter(fragments[child].spreads)))
                    break
            else:
                stack.pop()
                visiting.discard(name)
                # A cycle (which validation rejects) leaves its back edge
                # unresolved: it counts as an empty fragment here.
                resolved[name] = _totals(fragments[name], resolved)
    return resolved
