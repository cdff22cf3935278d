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
    """A tag with characters a CDN refuses, or longer than 128."""


def check_tags(tags: Iterable[Any]) -> list[str]:
    """The tags, deduplicated; BadTag naming the first that is not a tag."""
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise BadTag(f"invalid cache tag {tag!r}: use 1 to 128 letters, digits and _ : . - /")
        out[tag] = None
    return list(out)


#: What a walk over the data needs of one object-valued selection, computed
#: once per document: ``(response key, type name, is list, id key, children)``.
Plan = tuple[tuple[str, str, bool, "str | None", "Plan"], ...]


def plan(selections: tuple[Selection, ...]) -> Plan:
    """The object-valued selections of a document, in the form :func:`tags_of` walks."""
    out = []
    for sel in selections:
        if sel.type.is_leaf or not sel.selections:
            continue
        id_key = next((c.response_key for c in sel.selections if c.name == "id"), None)
        out.append((sel.response_key, sel.type.name, sel.type.is_list, id_key, plan(sel.selections)))
    return tuple(out)


def tags_of(selections_plan: Plan, data: Any, *, merged: bool = False) -> Any:
    """``(entity tags, type names)`` found in ``data`` (a result's ``data``); one set of both with ``merged``."""
    entities: set[str] = set()
    types = entities if merged else set()
    if isinstance(data, dict):
        _walk(selections_plan, data, entities, types)
    return entities if merged else (entities, types)


def response_tags(selections: tuple[Selection, ...], data: Any) -> tuple[set[str], set[str]]:
    """:func:`tags_of` straight from selections (no plan kept)."""
    return tags_of(plan(selections), data)


def _walk(nodes: Plan, obj: dict, entities: set[str], types: set[str]) -> None:
    # The hot loop of every stored response: plain dict/list type checks
    # (results are built from JSON types) and local lookups only.
    add_entity, add_type = entities.add, types.add
    for key, type_name, is_list, id_key, children in nodes:
        value = obj.get(key)
        if value is None:
            add_type(type_name)
            continue
        if is_list:
            add_type(type_name)
            if type(value) is not list:
                continue
            items = _flatten(value) if value and type(value[0]) is list else value
        else:
            items = (value,)
        for item in items:
            if type(item) is not dict:
                continue
            actual = item.get("__typename") or type_name
            ident = item.get(id_key) if id_key is not None else None
            if ident is None:
                add_type(actual)
            else:
                tag = f"{actual}:{ident}"
                # An id a tag cannot carry (spaces, non-ASCII) tags its type instead: coarser, never stale.
                if (type(ident) is int or (type(ident) is str and ident.isascii() and ident.isalnum())) and len(tag) <= 128 or TAG.match(tag):
                    add_entity(tag)
                else:
                    add_type(actual)
            if children:
                _walk(children, item, entities, types)


def _flatten(value: Any) -> list:
    out: list = []
    for v in value:
        out.extend(_flatten(v) if isinstance(v, list) else (v,))
    return out


def mutation_tags(selections: tuple[Selection, ...], data: Any) -> list[str]:
    """What a mutation's result invalidates: its entities and their types' lists."""
    entities, types = response_tags(selections, data)
    types |= {tag.split(":", 1)[0] for tag in entities}
    return sorted(entities) + sorted(types)
