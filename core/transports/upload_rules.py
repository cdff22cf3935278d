"""Which fields each file of a multipart request reaches, and the rules plugins set for them.

Plugins give :class:`~plugboard.graphql.upload.UploadRules` per field
(``plugboard_upload_rules``); :func:`collect` gathers them while the app is
built. For a request, :func:`rules_by_file` puts a :class:`FileSlot` where each
file will go in ``operations``, binds the operation's cached document view to
those variables, and reads off the fields whose arguments hold a slot. That is
how a file sent as ``$file`` is known to be ``Mutation.uploadFile``'s before a
byte of it is read, without the transport parsing GraphQL itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from plugboard import keys
from plugboard.errors import SchemaError
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.upload import UploadRules

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.pluginmanager import PluginManager

#: ``(field coordinate, rules)`` that apply to one file.
FieldRules = tuple[str, UploadRules]


class FileSlot:
    """Stands in for a file in ``operations`` while the fields it reaches are found."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def collect(app: "web.Application", pm: "PluginManager", configs: dict[str, Any]) -> dict[str, list[FieldRules]]:
    """Every plugin's rules by field coordinate; SchemaError naming the plugin for a bad entry."""
    composed = app[keys.COMPOSED_SCHEMA]
    rules: dict[str, list[FieldRules]] = {}
    problems: list[str] = []
    for plugin, returned in pm.call_each("plugboard_upload_rules", app=app, configs=configs):
        for coordinate, rule in (returned or {}).items():
            if coordinate not in composed.field_owners:
                problems.append(f"plugin {plugin!r}: upload rules for {coordinate!r}, which names no field of the composed schema")
            elif not isinstance(rule, UploadRules):
                problems.append(f"plugin {plugin!r}: upload rules for {coordinate!r} must be an UploadRules, got {type(rule).__name__}")
            else:
                rules.setdefault(coordinate, []).append((coordinate, rule))
    if problems:
        raise SchemaError("\n".join(problems))
    return rules


def rules_by_file(app: "web.Application", operations: dict[str, Any] | list[Any]) -> dict[str, list[FieldRules]]:
    """The rules for each :class:`FileSlot` name found in ``operations`` (files reaching no ruled field are absent).

    A document that does not parse, or an operation that cannot be chosen,
    gives no rules: the request fails later with the runner's own error, and
    meanwhile the core's limits still apply.
    """
    rules = app[keys.UPLOAD_RULES]
    if not rules:
        return {}
    engine = app[keys.RUNNER].engine
    found: dict[str, list[FieldRules]] = {}
    for op in operations if isinstance(operations, list) else [operations]:
        query, name, variables = op.get("query"), op.get("operationName"), op.get("variables")
        if not isinstance(query, str) or not isinstance(variables, dict) or (name is not None and not isinstance(name, str)):
            continue
        parsed = engine.parse(query)
        if parsed.errors:
            continue
        names = [n for n, _type in parsed.operations()]
        if (name is None and len(names) != 1) or (name is not None and name not in names):
            continue
        try:
            view = parsed.view(name, variables)
        except GraphQLError:  # no root type for the operation: the runner says so
            continue
        for selection, _depth, _path in view.walk():
            field_rules = rules.get(selection.coordinate)
            if not field_rules:
                continue
            for value in selection.arguments.values():
                for slot in _slots(value):
                    found.setdefault(slot.name, []).extend(field_rules)
    return found


def _slots(value: Any) -> Iterator[FileSlot]:
    if isinstance(value, FileSlot):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _slots(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _slots(item)
