"""``@rateLimit(max, window, per)``: per-field (and so per-operation) limits read from the composed SDL.

On a field definition::

    extend type Mutation {
      login(email: String!, password: String!): Session @rateLimit(max: 5, window: "1m", per: IP)
    }

Every operation that selects the field spends one hit per selection (an
alias is another selection) from the counter of ``per``: ``IP`` (the client
address), ``USER`` (the identity; an anonymous caller counts by IP) or
``KEY`` (the API key; without one, as ``USER``). On a root field this is
a per-operation limit. Over it the whole operation is refused with
``extensions.code: RATE_LIMITED`` (HTTP 429 with ``Retry-After`` and the
field's ``RateLimit`` items; over WebSocket an ``error`` message). Fields are
matched by the coordinate the query selects them on, so a limit on
``Book.secret`` does not cover the same field read through an interface.

A bad use (a missing or non-positive ``max``, a window that is not a
duration, an unknown ``per`` or argument) stops start-up, naming the SDL
file and line.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import attrs
from graphql.language import ast as gql

from plugboard.errors import SchemaError
from plugboard.graphql.sdl import DirectiveUse, directive_uses
from plugboard.units import parse_duration

DIRECTIVE = "rateLimit"
Per = Literal["IP", "USER", "KEY"]
PER = ("IP", "USER", "KEY")


@attrs.frozen
class FieldLimit:
    """One ``@rateLimit``: ``max`` selections per ``window`` seconds per ``per``."""

    coordinate: str
    max: int
    window: float
    per: Per = "USER"
    where: str = ""


def read_rate_limits(fragments: Iterable[Any]) -> dict[str, FieldLimit]:
    """Every ``@rateLimit`` by field coordinate; SchemaError naming each bad use (file and line)."""
    limits: dict[str, FieldLimit] = {}
    problems: list[str] = []
    for use in directive_uses(fragments, DIRECTIVE):
        if use.field_name is None:
            problems.append(f"{use.where}: @rateLimit on {use.what}: only fields can be limited (put it on the field)")
            continue
        found = _limit(use, problems)
        if found is None:
            continue
        if use.coordinate in limits:
            problems.append(f"{use.where}: @rateLimit on {use.what}: the field is already limited at {limits[use.coordinate].where}")
            continue
        limits[use.coordinate] = found
    if problems:
        raise SchemaError("\n".join(problems))
    return limits


def _limit(use: DirectiveUse, problems: list[str]) -> FieldLimit | None:
    def bad(reason: str) -> None:
        problems.append(f"{use.where}: @rateLimit on {use.what}: {reason}")

    args = dict(use.arguments)
    ok = True
    for name in args:
        if name not in ("max", "window", "per"):
            bad(f"unknown argument {name!r} (expected max, window, per)")
            ok = False
    maximum = args.get("max")
    if not isinstance(maximum, gql.IntValueNode) or int(maximum.value) <= 0:
        bad(f"max must be a whole number > 0, not {_shown(maximum)}")
        ok = False
    window = args.get("window")
    seconds = 0.0
    try:
        if not isinstance(window, (gql.StringValueNode, gql.IntValueNode)):
            raise ValueError
        seconds = parse_duration(window.value if isinstance(window, gql.StringValueNode) else int(window.value))
        if seconds <= 0:
            raise ValueError
    except ValueError:
        bad(f"window must be a duration such as \"30s\", \"1m\" or \"1h\", not {_shown(window)}")
        ok = False
    per = args.get("per")
    per_value = "USER"
    if per is not None:
        if not isinstance(per, gql.EnumValueNode) or per.value not in PER:
            bad(f"per must be one of {', '.join(PER)}, not {_shown(per)}")
            ok = False
        else:
            per_value = per.value
    if not ok:
        return None
    return FieldLimit(use.coordinate, int(maximum.value), seconds, per_value, use.where)  # type: ignore[arg-type]


def _shown(node: Any) -> str:
    if node is None:
        return "nothing"
    value = getattr(node, "value", None)
    if isinstance(node, gql.StringValueNode):
        return repr(value)
    return str(value) if value is not None else type(node).__name__.removesuffix("ValueNode").lower()
