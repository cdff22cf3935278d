"""Converting one raw setting value to an annotated type, and naming types in messages.

The scalar conversions and type helpers :mod:`plugboard.config` walks attrs
classes with: numbers from numeric strings (values from the environment are
strings), ``Literal`` choices, enums, the :mod:`plugboard.units` markers, and
the words messages use for a type (``expected an integer``).
"""

from __future__ import annotations

import collections.abc
import enum
import math
import re
import sys
import typing
from typing import Any, Literal, Mapping

import attrs

from plugboard.units import DurationMarker, SecretMarker, SizeMarker

INT_RE = re.compile(r"\s*[+-]?\d+\s*")


class TypeProblem(Exception):
    """A value does not fit a type; the message is the reason shown to the user."""


def to_int(raw: Any) -> int:
    if isinstance(raw, bool):  # an int subclass, but `port: true` is a mistake
        raise TypeProblem("expected an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and INT_RE.fullmatch(raw):
        return int(raw)
    raise TypeProblem("expected an integer")


def to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeProblem("expected a number")
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise TypeProblem("expected a number") from None
    else:
        raise TypeProblem("expected a number")
    if not math.isfinite(value):
        raise TypeProblem("expected a number")
    return value


def to_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    # YAML and dynaconf turn `password: 12345` into an int; it was meant as text.
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)
    raise TypeProblem("expected a string")


def choice(choices: tuple[Any, ...], raw: Any) -> Any:
    for choice in choices:
        if raw == choice and type(raw) is type(choice):
            return choice
    # Environment values arrive parsed or as text: match "5" to 5 and 5 to "5".
    for choice in choices:
        if not isinstance(choice, bool) and not isinstance(raw, bool) and str(raw) == str(choice):
            return choice
    raise TypeProblem(f"expected one of {', '.join(repr(c) for c in choices)}")


def enum_value(cls: type[enum.Enum], raw: Any) -> enum.Enum:
    if isinstance(raw, cls):
        return raw
    for member in cls:
        if raw == member.value and type(raw) is type(member.value):
            return member
    for member in cls:
        if isinstance(raw, str) and (raw == str(member.value) or raw.lower() == member.name.lower()):
            return member
    raise TypeProblem(f"expected one of {', '.join(repr(m.value) for m in cls)}")


def other(tp: Any, raw: Any) -> Any:
    if isinstance(tp, type):
        if isinstance(raw, tp):
            return raw
        try:
            return tp(raw)
        except Exception as e:  # noqa: BLE001 - any constructor refusal is the reason
            raise TypeProblem(error_message(e) or f"expected {tp.__name__}") from None
    raise TypeError(f"plugboard.config cannot structure the type {tp!r}")


# -- type helpers -------------------------------------------------------------


def type_hints(cls: type) -> dict[str, Any]:
    """Field types with Annotated markers kept; string annotations resolved."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - fall back to attrs' own record, field by field
        module = sys.modules.get(cls.__module__)
        namespace = dict(vars(module)) if module else {}
        hints = {}
        for field in attrs.fields(cls):
            tp = field.type
            if isinstance(tp, str):
                try:
                    tp = eval(tp, namespace, dict(vars(cls)))  # noqa: S307 - a class's own annotation
                except Exception as e:
                    raise TypeError(f"cannot resolve the type of {cls.__name__}.{field.name}: {tp!r} ({e})") from e
            hints[field.name] = Any if tp is None else tp
        return hints


def strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def is_secret(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return any(isinstance(m, SecretMarker) for m in meta) or is_secret(base)
    if origin is not None:
        return any(is_secret(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return False


def takes_strings(tp: Any) -> bool:
    base = strip_annotated(tp)
    if base is str or base is Any:
        return True
    if typing.get_origin(base) is Literal:
        return any(isinstance(c, str) for c in typing.get_args(base))
    return isinstance(base, type) and issubclass(base, enum.Enum)


def exact(tp: Any, raw: Any) -> bool:
    """True when ``raw`` is already of the plain type ``tp`` (no coercion needed)."""
    base = strip_annotated(tp)
    if base is bool:
        return isinstance(raw, bool)
    if base is int:
        return isinstance(raw, int) and not isinstance(raw, bool)
    if base is float:
        return isinstance(raw, float)
    if base is str:
        return isinstance(raw, str)
    origin = typing.get_origin(base) or base
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(raw, (list, tuple))
    if origin in (dict, collections.abc.Mapping) or (isinstance(base, type) and attrs.has(base)):
        return isinstance(raw, Mapping)
    return False


def expected(arms: list[Any]) -> str:
    words = []
    for arm in arms:
        base = strip_annotated(arm)
        meta = typing.get_args(arm)[1:] if typing.get_origin(arm) is typing.Annotated else ()
        if any(isinstance(m, SizeMarker) for m in meta):
            words.append("a size")
        elif any(isinstance(m, DurationMarker) for m in meta):
            words.append("a duration")
        else:
            words.append(describe(base))
    return "expected " + " or ".join(dict.fromkeys(words))


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence) or tp in (list, tuple):
        return "a list"
    if origin in (dict, collections.abc.Mapping) or tp is dict or (isinstance(tp, type) and attrs.has(tp)):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))




def error_message(error: BaseException) -> str:
    """The reason a validator or constructor gave, as shown to the user."""
    # attrs' own validators raise with (message, attribute, ...) as args.
    if error.args and isinstance(error.args[0], str):
        return error.args[0]
    return str(error) or type(error).__name__
