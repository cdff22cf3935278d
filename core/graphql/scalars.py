"""The core's scalars: ``JSON`` (any JSON value) and ``Upload`` (a multipart file).

``DateTime`` is Tartiflette's built-in. Literal parsing walks Tartiflette's
AST nodes by their shape (``fields``/``values``/``value``), which is all a
JSON literal needs.
"""

from __future__ import annotations

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
