"""Cache hints: ``@cacheControl`` read from the composed SDL, and the policy of one operation.

As Apollo Server: hints on types and fields, a field's hint overriding its
type's; root fields and fields returning objects without a hint get the
default ``maxAge`` (``cache.queryCache.ttl``) unless they say
``inheritMaxAge: true``; scalar fields inherit. The response's policy is the
minimum ``maxAge`` over its fields, and ``PRIVATE`` if any field is private.
Resolvers may restrict it further at run time with :func:`cache_hint`.

The SDL's uses are read with the core's :func:`~plugboard.graphql.sdl.directive_uses`,
so a bad hint names its file and line, and start-up fails on it.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import attrs
from graphql.language import ast as gql

from plugboard.errors import SchemaError
from plugboard.graphql.document import DocumentView, Selection
from plugboard.graphql.sdl import DirectiveUse, directive_uses

Scope = Literal["PUBLIC", "PRIVATE"]
DIRECTIVE = "cacheControl"


@attrs.frozen
class Hint:
    max_age: int | None = None
    scope: Scope | None = None
    inherit_max_age: bool = False


@attrs.define
class Hints:
    """Every ``@cacheControl`` of the schema: ``types["Book"]``, ``fields["Query.books"]``."""

    types: dict[str, Hint] = attrs.field(factory=dict)
    fields: dict[str, Hint] = attrs.field(factory=dict)
    #: Root field coordinates never cached (``cache.queryCache.exclude``).
    excluded: frozenset[str] = frozenset()


@attrs.frozen
class Policy:
    """What an operation may be cached for: ``max_age`` seconds, shared or per identity.

    ``explicit`` is True when every root field (or the type it returns)
    carries a hint, i.e. the schema's author decided; the response cache
    keeps unhinted responses per identity when the caller is identified.
    """

    max_age: int
    scope: Scope = "PUBLIC"
    explicit: bool = False

    @property
    def cacheable(self) -> bool:
        return self.max_age > 0


def read_hints(fragments: Iterable[Any]) -> Hints:
    """Every ``@cacheControl`` of the composed SDL's fragments; SchemaError naming each bad one (file and line)."""
    hints = Hints()
    problems: list[str] = []
    for use in directive_uses(fragments, DIRECTIVE):
        hint = _hint(use, problems)
        if hint is None:
            continue
        if use.field_name is None:
            hints.types[use.type_name] = hint
        else:
            hints.fields[use.coordinate] = hint
    if problems:
        raise SchemaError("\n".join(problems))
    return hints


def _hint(use: DirectiveUse, problems: list[str]) -> Hint | None:
    where, what = use.where, use.what
    max_age: int | None = None
    scope: Scope | None = None
    inherit = False
    for name, value in use.arguments.items():
        if name == "maxAge":
            if not isinstance(value, gql.IntValueNode) or int(value.value) < 0:
                shown = getattr(value, "value", None) or type(value).__name__
                problems.append(f"{where}: @cacheControl on {what}: maxAge must be a whole number of seconds >= 0, not {shown}")
                return None
            max_age = int(value.value)
        elif name == "scope":
            if not isinstance(value, gql.EnumValueNode) or value.value not in ("PUBLIC", "PRIVATE"):
                problems.append(f"{where}: @cacheControl on {what}: scope must be PUBLIC or PRIVATE")
                return None
            scope = value.value  # type: ignore[assignment]
        elif name == "inheritMaxAge":
            if not isinstance(value, gql.BooleanValueNode):
                problems.append(f"{where}: @cacheControl on {what}: inheritMaxAge must be true or false")
                return None
            inherit = value.value
        else:
            problems.append(f"{where}: @cacheControl on {what}: unknown argument {name!r}")
            return None
    if inherit and max_age is not None:
        problems.append(f"{where}: @cacheControl on {what}: inheritMaxAge and maxAge exclude each other")
        return None
    return Hint(max_age, scope, inherit)


def operation_policy(view: DocumentView, hints: Hints, default_max_age: int) -> Policy:
    """The static policy of an operation, from its selections and the schema's hints."""
    max_age: int | None = None
    private = False
    explicit = True
    # (selection, is root)
    stack: list[tuple[Selection, bool]] = [(s, True) for s in view.selections]
    types, fields = hints.types, hints.fields
    while stack:
        sel, root = stack.pop()
        if sel.name.startswith("__"):
            continue
        composite = not sel.type.is_leaf
        field_max: int | None = None
        scope: str | None = None
        inherit = False
        type_hint = types.get(sel.type.name) if composite else None
        if type_hint is not None:
            field_max, scope, inherit = type_hint.max_age, type_hint.scope, type_hint.inherit_max_age
        field_hint = fields.get(sel.coordinate)
        if field_hint is not None:
            if field_hint.inherit_max_age:
                inherit, field_max = True, None
            elif field_hint.max_age is not None:
                field_max, inherit = field_hint.max_age, False
            if field_hint.scope is not None:
                scope = field_hint.scope
        if root and type_hint is None and field_hint is None:
            explicit = False
        if root and sel.coordinate in hints.excluded:
            return Policy(max_age=0)
        if field_max is None and ((composite and not inherit) or root):
            field_max = default_max_age
        if field_max is not None:
            max_age = field_max if max_age is None else min(max_age, field_max)
        if scope == "PRIVATE":
            private = True
        for child in sel.selections:
            stack.append((child, False))
    return Policy(max_age=default_max_age if max_age is None else max_age, scope="PRIVATE" if private else "PUBLIC", explicit=explicit)


class DynamicHints:
    """Hints resolvers add while the operation runs (``context.cache_control``)."""

    __slots__ = ("max_age", "private")

    def __init__(self) -> None:
        self.max_age: int | None = None
        self.private = False

    def restrict(self, max_age: int | None = None, scope: Scope | None = None) -> None:
        if max_age is not None:
            if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
                raise ValueError(f"max_age must be a whole number of seconds >= 0, not {max_age!r}")
            self.max_age = max_age if self.max_age is None else min(self.max_age, max_age)
        if scope == "PRIVATE":
            self.private = True
        elif scope not in (None, "PUBLIC"):
            raise ValueError(f"scope must be 'PUBLIC' or 'PRIVATE', not {scope!r}")

    def apply(self, policy: Policy) -> Policy:
        if self.max_age is None and not self.private:
            return policy
        max_age = policy.max_age if self.max_age is None else min(policy.max_age, self.max_age)
        return Policy(max_age=max_age, scope="PRIVATE" if self.private or policy.scope == "PRIVATE" else "PUBLIC", explicit=policy.explicit)


def cache_hint(context: Any, *, max_age: int | None = None, scope: Scope | None = None) -> None:
    """From a resolver: restrict the response's cache policy (lower ``max_age``, or make it ``PRIVATE``).

    A no-op when the cache plugin does not run or the operation is not
    cached, so plugins may call it unconditionally::

        from plugboard.plugins.cache import cache_hint

        async def resolve_me(parent, args, context, info):
            cache_hint(context, max_age=30, scope="PRIVATE")
    """
    hints = getattr(context, "cache_control", None)
    if isinstance(hints, DynamicHints):
        hints.restrict(max_age, scope)
