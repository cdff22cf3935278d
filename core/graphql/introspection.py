"""The October 2021 introspection schema, served over Tartiflette's June 2018 one.

Tartiflette bakes its own introspection module only when nothing has claimed
``__Type.fields`` yet (its built-ins step past a module whose registration
raises ``ImproperlyConfigured``). The engine claims it, and ``@deprecated``,
with what this module lists, and adds ``introspection.graphql`` to the SDL:
the types graphql-js 16, GraphiQL and ``gql`` 4 ask for
(``getIntrospectionQuery({inputValueDeprecation, specifiedByUrl,
directiveIsRepeatable})``). The resolvers read Tartiflette's baked objects by
attribute, so this module imports nothing from Tartiflette.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable

SDL = resources.files("plugboard.graphql").joinpath("introspection.graphql").read_text("utf-8")


def _directive(element: Any, name: str) -> Any:
    for node in getattr(element, "directives", None) or ():
        if getattr(getattr(node, "name", None), "value", None) == name:
            return node
    return None


def _argument(directive_node: Any, name: str, default: Any = None) -> Any:
    for arg in getattr(directive_node, "arguments", None) or ():
        if arg.name.value == name:
            return getattr(arg.value, "value", default)
    return default


def _deprecation(element: Any) -> tuple[bool, str | None]:
    """An argument's or input field's ``@deprecated``, read from its SDL directives."""
    node = _directive(element, "deprecated")
    if node is None:
        return False, None
    return True, _argument(node, "reason", "No longer supported")


def _visible(values: list[Any] | None, args: dict[str, Any], deprecated: Callable[[Any], bool]) -> list[Any] | None:
    if values is None or args.get("includeDeprecated") is not False:
        return values
    return [v for v in values if not deprecated(v)]


def _field_deprecated(value: Any) -> bool:
    return bool(getattr(value, "isDeprecated", False))


def _input_deprecated(value: Any) -> bool:
    return _deprecation(value)[0]


async def type_fields(parent, args, ctx, info):
    if getattr(parent, "kind", None) not in ("OBJECT", "INTERFACE"):
        return None
    return _visible(list(parent.fields), args, _field_deprecated)


async def type_enum_values(parent, args, ctx, info):
    if getattr(parent, "kind", None) != "ENUM":
        return None
    return _visible(list(parent.enumValues), args, _field_deprecated)


async def type_input_fields(parent, args, ctx, info):
    if getattr(parent, "kind", None) != "INPUT_OBJECT":
        return None
    return _visible(list(parent.inputFields), args, _input_deprecated)


async def type_specified_by_url(parent, args, ctx, info):
    if getattr(parent, "kind", None) != "SCALAR":
        return None
    return _argument(_directive(parent, "specifiedBy"), "url")


async def field_args(parent, args, ctx, info):
    return _visible(list(parent.args), args, _input_deprecated)


async def directive_is_repeatable(parent, args, ctx, info):
    # Tartiflette's SDL grammar has no `repeatable`: no directive repeats.
    return False


async def input_value_is_deprecated(parent, args, ctx, info):
    return _deprecation(parent)[0]


async def input_value_deprecation_reason(parent, args, ctx, info):
    return _deprecation(parent)[1]


async def schema_description(parent, args, ctx, info):
    return getattr(parent, "description", None)


RESOLVERS: dict[str, Callable] = {
    # First: its registration is what makes Tartiflette skip its own module.
    "__Type.fields": type_fields,
    "__Type.enumValues": type_enum_values,
    "__Type.inputFields": type_input_fields,
    "__Type.specifiedByURL": type_specified_by_url,
    "__Field.args": field_args,
    "__Directive.args": field_args,
    "__Directive.isRepeatable": directive_is_repeatable,
    "__InputValue.isDeprecated": input_value_is_deprecated,
    "__InputValue.deprecationReason": input_value_deprecation_reason,
    "__Schema.description": schema_description,
}


class SpecifiedByDirective:
    """``@specifiedBy(url:)``: only read by introspection; changes nothing at run time."""
