"""Composing the schema: the core's base SDL, ``schema.d``, and each plugin's fragments.

Fragments keep their origin (file or plugin) so every problem names where it
came from. The order is fixed: the core's base, then ``schema.d/*.graphql``
sorted by name, then plugins in declared order. Field ownership is recorded
here: it drives the duplicate-field check, the resolver-key check and the
``plugboard check`` table.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from plugboard.errors import SchemaError
from plugboard.graphql.engine import Contribution, FragmentShape, fragment_shape

CORE = "core"
_FIELD_KEY = re.compile(r"\b[_A-Za-z][_0-9A-Za-z]*\.[_A-Za-z][_0-9A-Za-z]*\b")
ROOT_TYPES = ("Query", "Mutation", "Subscription")


@attrs.define(frozen=True)
class Fragment:
    owner: str  # "core", "schema.d" or a plugin name
    source: str  # a file path, or "plugin 'books'"
    text: str


@attrs.define
class ComposedSchema:
    sdl: str
    fragments: list[Fragment]
    #: "Type.field" -> (owner, source:line)
    field_owners: dict[str, tuple[str, str]]

    def fields_of(self, owner: str) -> list[str]:
        return sorted(k for k, (o, _) in self.field_owners.items() if o == owner)


def base_fragments() -> list[Fragment]:
    """The core's own SDL, packaged as ``plugboard._schema`` (the repo's ``schema.d``)."""
    package = resources.files("plugboard._schema")
    out = []
    for entry in sorted(package.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".graphql"):
            out.append(Fragment(CORE, f"schema.d/{entry.name}", entry.read_text("utf-8")))
    return out


def directory_fragments(directory: Path) -> list[Fragment]:
    """A deployer's ``schema.d`` folder, unless it is the core's own (a source checkout)."""
    if not directory.is_dir():
        return []
    core_dir = Path(str(resources.files("plugboard._schema")))
    if core_dir.is_dir() and directory.resolve() == core_dir.resolve():
        return []
    return [
        Fragment("schema.d", str(path), path.read_text("utf-8"))
        for path in sorted(directory.glob("*.graphql"))
    ]


def plugin_fragments(plugin: str, returned: Any) -> list[Fragment]:
    """Normalise what ``plugboard_schema`` returned: text, a Path, or a list of them."""
    if returned is None:
        return []
    items = returned if isinstance(returned, (list, tuple)) else [returned]
    out = []
    for item in items:
        if isinstance(item, Path):
            try:
                out.append(Fragment(plugin, str(item), item.read_text("utf-8")))
            except OSError as e:
                raise SchemaError(f"plugin {plugin!r}: cannot read SDL file {item}: {e}") from e
        elif isinstance(item, str):
            out.append(Fragment(plugin, f"plugin {plugin!r}", item))
        else:
            raise SchemaError(
                f"plugin {plugin!r}: plugboard_schema returned {type(item).__name__}; expected SDL text or a Path"
            )
    return out


def compose(fragments: Iterable[Fragment]) -> ComposedSchema:
    """Check fragments against each other and join them into one SDL document."""
    fragments = list(fragments)
    shapes: list[tuple[Fragment, FragmentShape]] = [(f, _shape(f)) for f in fragments]
    owners: dict[str, tuple[str, str]] = {}
    defined: dict[str, str] = {}
    problems = []
    for fragment, shape in shapes:
        for type_name in shape.defined_types:
            if type_name in defined:
                problems.append(
                    f"type {type_name} is defined twice: by {defined[type_name]} and by {_who(fragment)}"
                )
            defined[type_name] = _who(fragment)
        for f in shape.fields:
            key = f"{f.type_name}.{f.field_name}"
            where = f"{fragment.source}:{f.line}" if f.line else fragment.source
            if key in owners:
                other_owner, other_where = owners[key]
                problems.append(
                    f"field {key} is declared twice: by {_describe(other_owner, other_where)} and by {_describe(fragment.owner, where)}"
                )
                continue
            owners[key] = (fragment.owner, where)
    if problems:
        raise SchemaError("\n".join(problems))
    # Mutation and Subscription roots exist only when some fragment extends
    # them: GraphQL forbids empty types.
    extended = {t for _, shape in shapes for t in shape.extended_types}
    prelude = [f"type {root}" for root in ROOT_TYPES[1:] if root in extended and root not in defined]
    sdl = "\n".join(prelude + [f.text for f in fragments])
    return ComposedSchema(sdl=sdl, fragments=fragments, field_owners=owners)


def locate_fields(message: str, composed: ComposedSchema) -> str:
    """``message`` followed by where each ``Type.field`` it mentions was declared (file and line)."""
    found = []
    for key in dict.fromkeys(_FIELD_KEY.findall(message)):
        if key in composed.field_owners:
            owner, where = composed.field_owners[key]
            found.append(f"{key} is declared by {_describe(owner, where)}")
    return f"{message} ({'; '.join(found)})" if found else message


def check_keys(
    composed: ComposedSchema,
    kind: str,
    contributions: Mapping[str, Contribution],
    *,
    subscription_only: bool = False,
) -> list[str]:
    """Problems with resolver/subscription keys: unknown fields, wrong root."""
    problems = []
    for key, c in contributions.items():
        if key not in composed.field_owners:
            problems.append(f"plugin {c.plugin!r}: {kind} {key!r} names no field of the composed schema")
        elif subscription_only and not key.startswith("Subscription."):
            problems.append(f"plugin {c.plugin!r}: subscription {key!r} must be a Subscription field")
    return problems


def _shape(fragment: Fragment) -> FragmentShape:
    try:
        return fragment_shape(fragment.text, fragment.source)
    except SchemaError as e:
        if fragment.owner in (CORE, "schema.d") or fragment.source.startswith("plugin "):
            raise
        # A plugin's .graphql file: say whose it is as well as where.
        raise SchemaError(f"plugin {fragment.owner!r}: {e}") from e


def _who(fragment: Fragment) -> str:
    return _describe(fragment.owner, fragment.source)


def _describe(owner: str, where: str) -> str:
    if owner in (CORE, "schema.d"):
        return where
    return f"plugin {owner!r} ({where})" if not where.startswith("plugin ") else f"plugin {owner!r}"


@attrs.define(frozen=True)
class DirectiveUse:
    """One use of a directive in the composed SDL, with where it was written.

    ``type_name`` is the type it is on (or whose field it is on), ``field_name``
    the field (None on the type itself). ``arguments`` maps each argument's
    name to its graphql-core value node, unchecked: the caller validates and
    reports problems as ``f"{use.where}: ..."``.
    """

    directive: str
    type_name: str
    field_name: str | None
    arguments: Mapping[str, Any]
    #: ``path/file.graphql:12``, or ``plugin 'x', SDL line 12`` for SDL text a plugin returned.
    where: str

    @property
    def coordinate(self) -> str:
        """``Type.field``, or ``Type`` for a use on the type."""
        return f"{self.type_name}.{self.field_name}" if self.field_name else self.type_name

    @property
    def what(self) -> str:
        """``field Query.books`` or ``type Book``, for messages."""
        return f"field {self.coordinate}" if self.field_name else f"type {self.type_name}"


def directive_uses(fragments: Iterable[Fragment], name: str) -> list[DirectiveUse]:
    """Every use of ``@name`` on types, interfaces, unions and their fields, in fragment order.

    Plugins that give a directive a meaning (``@cost``, ``@rateLimit``,
    ``@cacheControl``) read its uses here once the schema is composed, so
    their start-up errors name the SDL file and line. Read with graphql-core's
    parser (Tartiflette stays in the engine); a fragment that does not parse
    is skipped, since composing the schema reports it.
    """
    from graphql.error import GraphQLSyntaxError
    from graphql.language import ast as gql
    from graphql.language import parse

    holders = (
        gql.ObjectTypeDefinitionNode,
        gql.ObjectTypeExtensionNode,
        gql.InterfaceTypeDefinitionNode,
        gql.InterfaceTypeExtensionNode,
        gql.UnionTypeDefinitionNode,
        gql.UnionTypeExtensionNode,
    )
    uses: list[DirectiveUse] = []
    marker = "@" + name
    for fragment in fragments:
        if marker not in fragment.text:  # most fragments: no parse at all
            continue
        try:
            document = parse(fragment.text, no_location=False)
        except GraphQLSyntaxError:
            continue
        for node in document.definitions:
            if not isinstance(node, holders):
                continue
            type_name = node.name.value
            targets = [(None, node.directives)] + [(f.name.value, f.directives) for f in getattr(node, "fields", None) or ()]
            for field_name, directives in targets:
                for directive in directives or ():
                    if directive.name.value != name:
                        continue
                    line = fragment.text.count("\n", 0, directive.loc.start) + 1 if directive.loc else 0
                    where = f"{fragment.source}, SDL line {line}" if fragment.source.startswith("plugin ") else f"{fragment.source}:{line}"
                    arguments = {a.name.value: a.value for a in directive.arguments}
                    uses.append(DirectiveUse(name, type_name, field_name, arguments, where))
    return uses
