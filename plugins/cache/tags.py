"""Tags: what a response holds (``Book:42``) and which lists it read (``Book``).

A response is tagged with every entity in it (``Typename:id``, where the
client selected ``id``) and with the type of every list it read; an object
selected without its ``id``, or a single object that was null, tags its type
too (coarse, but never stale). A mutation invalidates the entities it
returned and their types' tags, so every list that could hold them goes.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from plugboard.graphql.document import Selection

#: Letters, digits and ``_ : . - /``; Cloudflare also refuses spaces and commas in tags.
TAG = re.compile(r"^[A-Za-z0-9_:.\-/]{1,128}$")


class BadTag(ValueError):
    pass


def check_tags(tags: Iterable[Any]) -> list[str]:
    """The tags, deduplicated; BadTag naming the first that is not a tag."""
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise BadTag(f"invalid cache tag {tag!r}: use 1 to 128 letters, digits and _ : . - /")
        out[tag] = None
    return list(out)


def response_tags(selections: tuple[Selection, ...], data: Any) -> tuple[set[str], set[str]]:
    """``(entity tags, type names)`` found in ``data`` for these selections."""
    entities: set[str] = set()
    types: set[str] = set()
    if isinstance(data, dict):
        _collect(selections, data, entities, types)
    return entities, types


def _collect(selections: tuple[Selection, ...], obj: dict, entities: set[str], types: set[str]) -> None:
    for sel in selections:
        if sel.type.is_leaf or not sel.selections:
            continue
        value = obj.get(sel.response_key)
        type_name = sel.type.name
        if sel.type.is_list:
            types.add(type_name)
            _visit_list(sel, value, entities, types)
        elif value is None:
            types.add(type_name)
        elif isinstance(value, dict):
            _visit(sel, value, entities, types)


def _visit_list(sel: Selection, value: Any, entities: set[str], types: set[str]) -> None:
    if not isinstance(value, list):
        return
    for item in value:
        if isinstance(item, list):
            _visit_list(sel, item, entities, types)
        elif isinstance(item, dict):
            _visit(sel, item, entities, types)


def _visit(sel: Selection, item: dict, entities: set[str], types: set[str]) -> None:
    type_name = item.get("__typename") if isinstance(item.get("__typename"), str) else sel.type.name
    id_key = None
    for child in sel.selections:
        if child.name == "id":
            id_key = child.response_key
            break
    ident = item.get(id_key) if id_key is not None else None
    if ident is not None:
        entities.add(f"{type_name}:{ident}")
    else:
        types.add(type_name)
    _collect(sel.selections, item, entities, types)


def mutation_tags(selections: tuple[Selection, ...], data: Any) -> list[str]:
    """What a mutation's result invalidates: its entities and their types' lists."""
    entities, types = response_tags(selections, data)
    types |= {tag.split(":", 1)[0] for tag in entities}
    return sorted(entities) + sorted(types)
