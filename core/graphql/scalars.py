"""The core's scalars: ``JSON`` (any JSON value), ``Upload`` (a multipart file) and ``DateTime``.

Literal parsing walks Tartiflette's AST nodes by their shape
(``fields``/``values``/``value``), which is all a JSON literal needs.
``Date`` and ``Time`` are Tartiflette's built-ins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plugboard.graphql.engine import UNDEFINED_VALUE
from plugboard.graphql.upload import Upload


def _literal(node: Any, variables: dict[str, Any] | None = None) -> Any:
    kind = type(node).__name__
    if kind == "ObjectValueNode":
        return {f.name.value: _literal(f.value, variables) for f in node.fields}
    if kind == "ListValueNode":
        return [_literal(v, variables) for v in node.values]
    if kind == "IntValueNode":
        return int(node.value)
    if kind == "FloatValueNode":
        return float(node.value)
    if kind == "NullValueNode":
        return None
    if kind == "VariableNode":
        return (variables or {}).get(node.name.value)
    if kind in ("StringValueNode", "BooleanValueNode", "EnumValueNode"):
        return node.value
    raise ValueError(f"unsupported literal {kind}")


class JSONScalar:
    """Passes any JSON-compatible value through, in both directions."""

    def coerce_output(self, value: Any) -> Any:
        return value

    def coerce_input(self, value: Any) -> Any:
        return value

    def parse_literal(self, ast: Any, variables: dict[str, Any] | None = None) -> Any:
        try:
            return _literal(ast, variables)
        except ValueError:
            return UNDEFINED_VALUE


class UploadScalar:
    """Accepts only the :class:`Upload` objects the multipart transport put in variables."""

    def coerce_output(self, value: Any) -> Any:
        raise ValueError("Upload is an input-only scalar")

    def coerce_input(self, value: Any) -> Upload:
        if not isinstance(value, Upload):
            raise ValueError(
                "Upload values must be sent as files with a multipart request "
                "(GraphQL multipart request spec)"
            )
        return value

    def parse_literal(self, ast: Any, variables: dict[str, Any] | None = None) -> Any:
        return UNDEFINED_VALUE


class DateTimeScalar:
    """ISO 8601 date-times, read back as this API writes them.

    Tartiflette's built-in ``DateTime`` reads only ``2026-12-07T10:00:00``:
    a value this API wrote (``2026-12-07T10:00:00.250000+00:00``) or an RFC
    3339 one from a client (``...Z``) could not be sent back. This one reads
    what :meth:`datetime.datetime.fromisoformat` reads: fractions of a second,
    ``Z`` or an offset (an aware datetime), or none (a naive one, as before).
    """

    def coerce_output(self, value: Any) -> str:
        iso = getattr(value, "isoformat", None)
        if iso is None:
            raise TypeError(f"DateTime cannot represent {value!r}: resolve a datetime")
        return iso()

    def coerce_input(self, value: Any) -> dt.datetime:
        parsed = _datetime(value)
        if parsed is None:
            raise TypeError(f"DateTime cannot represent {value!r}: send an ISO 8601 string such as 2026-12-07T10:00:00Z")
        return parsed

    def parse_literal(self, ast: Any, variables: dict[str, Any] | None = None) -> Any:
        parsed = _datetime(ast.value) if type(ast).__name__ == "StringValueNode" else None
        return UNDEFINED_VALUE if parsed is None else parsed


def _datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None
