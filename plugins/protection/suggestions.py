"""Hiding "Did you mean ...?" from error messages (``protection.graphql.suggestions``).

Suggestions name fields, enum values and input fields the client did not
ask for: with introspection off they would leak the schema one guess at a
time (graphql-armor's blockFieldSuggestions, Apollo's hideSchemaDetailsFromClientErrors).
``auto`` follows the core's ``graphql.introspection``: when it is off, the
suffix is cut from non-admins' errors; admins, who may still introspect,
keep it. ``hide`` cuts it for everyone, ``show`` never.

Tartiflette writes suggestions where it coerces variables (unknown enum
values and input fields), which happens during execution; so a step sees
them in the result. The core's validation does not suggest.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

from plugboard.graphql.context import is_admin

#: Tartiflette's ``did_you_mean``: "Did you mean A?", "A or B?", "A, B, or C?" (after "; " or ". ").
_SUGGESTION = re.compile(r"[;.]?\s*Did you mean [^?]*\?")


def strip(message: str) -> str:
    """The message without its "Did you mean ...?" part."""
    return _SUGGESTION.sub("", message).rstrip()


def _scrub(result: Any) -> Any:
    errors = result.get("errors") if isinstance(result, dict) else None
    if not errors or not any("Did you mean" in str(e.get("message", "")) for e in errors):
        return result
    cleaned = dict(result)  # a copy: a cached EncodedResult keeps its own JSON
    cleaned["errors"] = [{**e, "message": strip(str(e.get("message", "")))} if "Did you mean" in str(e.get("message", "")) else e for e in errors]
    return cleaned


async def _scrub_stream(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for result in stream:
            yield _scrub(result)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def hidden(mode: str, introspection: bool) -> bool | None:
    """True: hide for all; None: hide for non-admins; False: never."""
    if mode == "hide":
        return True
    if mode == "show" or introspection:
        return False
    return None


def suggestions_step(mode: bool | None) -> Any:
    """The step for :func:`hidden`'s answer (never called with False)."""

    async def hide_suggestions(op: Any, call_next: Any) -> Any:
        if mode is None and is_admin(op.context):
            return await call_next(op)
        result = await call_next(op)
        if op.operation_type == "subscription" and not isinstance(result, dict):
            return _scrub_stream(result)
        return _scrub(result)

    return hide_suggestions
