"""Tags: what a response holds (``Book:42``) and which lists it read (``Book``).

A response is tagged with every entity in it (``Typename:id``, where the
client selected ``id``) and with the type of every list it read; an object
selected without its ``id``, or a single object that was null, tags its type
too (coarse, but never stale). A mutation invalidates the entities it
returned and their types' tags, so every list that could hold them goes.
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import itemgetter
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
#: once per document: ``(response key, type name, its tag prefix "Type:", is
#: list, id key, whether __typename is selected, children, the tags of the
#: pages of ids seen at this level)``.
Plan = tuple[tuple[str, str, str, bool, "str | None", bool, "Plan", dict], ...]


def plan(selections: tuple[Selection, ...]) -> Plan:
    """The object-valued selections of a document, in the form :func:`tags_of` walks."""
    out = []
    for sel in selections:
        if sel.type.is_leaf or not sel.selections:
            continue
        id_key = next((c.response_key for c in sel.selections if c.name == "id"), None)
        typename = any(c.response_key == "__typename" for c in sel.selections)
        name = sel.type.name
        out.append((sel.response_key, name, name + ":", sel.type.is_list, id_key, typename, plan(sel.selections), {}))
    return tuple(out)


def tags_of(selections_plan: Plan, data: Any) -> tuple[set[str], set[str]]:
    """``(entity tags, type names)`` found in ``data`` (a result's ``data``)."""
    entities: set[str] = set()
    types: set[str] = set()
    pages: list[frozenset[str]] = []
    if isinstance(data, dict):
        _walk(selections_plan, [data], entities, types, pages)
    entities.update(*pages)
    return entities, types


def entry_tags(selections_plan: Plan, data: Any, memo: dict) -> frozenset[str]:
    """Every tag of ``data``, entities and types in one frozenset, for a store to index.

    Responses to one document mostly carry the same pages of ids (a list's
    first page, its authors): ``memo`` (one dict per document, kept by the
    caller) maps the pages and loose tags a walk found to their union, so
    equal responses get the same frozenset object, which a store's index
    matches by identity instead of comparing every tag.
    """
    loose: set[str] = set()
    pages: list[frozenset[str]] = []
    if isinstance(data, dict):
        _walk(selections_plan, [data], loose, loose, pages)
    key = (tuple(pages), tuple(sorted(loose)))
    found = memo.get(key)
    if found is None:
        found = frozenset(loose).union(*pages)
        # Kept small, as the pages are: whatever clients ask.
        if len(memo) >= 32:
            memo.clear()
        memo[key] = found
    return found


def response_tags(selections: tuple[Selection, ...], data: Any) -> tuple[set[str], set[str]]:
    """:func:`tags_of` straight from selections (no plan kept)."""
    return tags_of(plan(selections), data)


def _walk(nodes: Plan, objects: list, entities: set[str], types: set[str], pages_found: list) -> None:
    # The hot loop of every stored response (a miss pays it per entity).
    # Level by level: one call per selection for all the objects it selects
    # in, not one per object; plain dict/list type checks (results are built
    # from JSON types), the node's facts computed once per document.
    add_entity, add_type = entities.add, types.add
    for key, type_name, prefix, is_list, id_key, typename, children, pages in nodes:
        if is_list:
            add_type(type_name)
            items: list = []
            for obj in objects:
                value = obj.get(key)
                if value is None:
                    add_type(type_name)
                elif type(value) is list:
                    items.extend(_flatten(value) if value and type(value[0]) is list else value)
        else:
            # map() over C callables: no bytecode per object (objects are dicts
            # here). A null object, or one with no field selected ({}), has
            # no id: its type is tagged either way.
            items = list(filter(None, map(dict.get, objects, repeat(key))))
            if len(items) != len(objects):
                add_type(type_name)
        if not items:
            continue
        if id_key is not None and not typename and _tag_level(items, id_key, prefix, pages_found, pages):
            if children:
                _walk(children, items, entities, types, pages_found)
            continue
        parents: list | None = [] if children else None
        room = 128 - len(prefix)
        for item in items:
            if type(item) is not dict:
                continue
            ident = item.get(id_key) if id_key is not None else None
            if typename and item.get("__typename"):
                _tag(item["__typename"], ident, add_entity, add_type)
            elif type(ident) is str and ident.isalnum() and ident.isascii() and len(ident) <= room:
                add_entity(prefix + ident)
            else:
                _tag(type_name, ident, add_entity, add_type)
            if parents is not None:
                parents.append(item)
        if parents:
            _walk(children, parents, entities, types, pages_found)


def _tag_level(items: list, id_key: str, prefix: str, pages_found: list, pages: dict) -> bool:
    """Tag a whole level at once when it is the usual one (its page of tags goes to ``pages_found``); False (nothing added) otherwise.

    The usual level: every item an object whose id is a non-empty
    alphanumeric ASCII string that fits a tag. The same page of ids comes
    back in response after response (a list's first page, its authors), so
    each page's tags are built once and kept with the plan node (``pages``).
    """
    try:
        idents = tuple(map(itemgetter(id_key), items))
    except (KeyError, TypeError, IndexError):
        return False
    try:
        tags = pages.get(idents)
    except TypeError:  # an id that cannot be hashed (a list): not a tag either
        return False
    if tags is None:
        tags = False
        joined = "".join(idents) if all(type(ident) is str for ident in idents) else ""
        if joined.isalnum() and joined.isascii() and all(idents) and max(map(len, idents)) <= 128 - len(prefix):
            tags = frozenset(map(prefix.__add__, idents))
        # Kept small: a node holds at most 32 pages of up to 50 ids (the
        # plan lives as long as its document's shape), whatever clients ask.
        if len(idents) <= 50:
            if len(pages) >= 32:
                pages.clear()
            pages[idents] = tags
    if tags is False:
        return False
    pages_found.append(tags)
    return True


def _tag(type_name: str, ident: Any, add_entity: Any, add_type: Any) -> None:
    if ident is None or ident == "":
        add_type(type_name)
        return
    tag = f"{type_name}:{ident}"
    if type(ident) is int and len(tag) <= 128 or TAG.match(tag):
        add_entity(tag)
    else:
        # An id a tag cannot carry (spaces, non-ASCII) tags its type instead: coarser, never stale.
        add_type(type_name)


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
