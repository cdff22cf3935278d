"""Turning plain settings mappings into validated attrs instances, with every problem at once.

:func:`structure` walks an attrs class (nested classes, lists, dicts,
``Optional``, ``Literal``, enums, scalars and the :mod:`plugboard.units`
markers) alongside a mapping read from YAML or the environment, and either
returns an instance or raises one :class:`~plugboard.errors.ConfigError`
listing a :class:`~plugboard.errors.ConfigProblem` per bad key: its full
dotted name, its value (``'***'`` for secrets), the reason and where the value
came from. Values from the environment arrive as strings, so numeric strings
are accepted for numbers and ``yes``/``no``-style strings for booleans. Keys are
matched without regard to case, and a camelCase key (the seed's spelling)
names the snake_case field of the same words. :func:`unstructure` and
:func:`iter_fields` go the other way, for ``plugboard config``.
"""

from __future__ import annotations

import collections.abc
import enum
import re
import types
import typing
from typing import Any, Callable, Literal, Mapping, Union

import attrs

from plugboard.config_types import (
    TypeProblem,
    choice,
    enum_value,
    error_message,
    exact,
    expected,
    is_secret,
    other,
    strip_annotated,
    takes_strings,
    to_float,
    to_int,
    to_str,
    type_hints,
)
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.units import DurationMarker, SizeMarker, mask_urls, parse_duration, parse_size

__all__ = ["MASK", "iter_fields", "normalize_key", "parse_bool", "structure", "unstructure"]

#: What a secret value is replaced with wherever it would be shown.
MASK = "***"

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NULL_STRINGS = frozenset({"", "null", "none", "~"})


class _Invalid:
    """The result of a value that produced a problem (never a real setting)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


def normalize_key(key: object) -> str:
    """Return the field-name form of a settings key: ``maxFileSize`` -> ``max_file_size``.

    Upper-case keys (from environment variables) and snake_case keys come out
    lower-cased and otherwise unchanged.
    """
    return _CAMEL_RE.sub("_", str(key)).lower()


def parse_bool(value: object) -> bool:
    """Return a boolean from ``True``/``False``, 0/1 or ``true``/``yes``/``on``/``1`` and their opposites.

    The integers 0 and 1 are accepted because dynaconf parses ``FLAG=1`` in the
    environment into the integer 1; any other integer is an error.

    :raises ValueError: with the reason ``expected true or false``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError("expected true or false")


def structure(
    cls: type,
    data: Mapping[str, Any] | None,
    *,
    section: str,
    source_of: Callable[[str], str] | None = None,
) -> Any:
    """Build an instance of the attrs class ``cls`` from ``data``, or raise ConfigError.

    :param cls: a (usually frozen, kw_only) attrs class.
    :param data: the section's mapping; None counts as empty.
    :param section: the dotted prefix of every key in messages (``uploads``).
    :param source_of: maps a dotted key to where its value came from
        (``Settings.source``); without it every source reads ``override``.
    :raises ConfigError: listing every problem found, not only the first.
    """
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    walker = _Walker(source_of or (lambda key: "override"))
    result = walker.convert(cls, {} if data is None else data, section, secret=False)
    if walker.problems:
        raise ConfigError(walker.problems)
    return result


def unstructure(instance: Any, *, mask: bool = False) -> dict[str, Any]:
    """Return the plain-data form of an attrs instance: snake_case keys, lists, dicts.

    :param mask: replace the value of every Secret field that is set with ``'***'``.
    """
    if not attrs.has(type(instance)):
        raise TypeError(f"{instance!r} is not an attrs instance")
    return _unstructure(instance, mask)


def iter_fields(cls: type, prefix: str) -> list[tuple[str, Any, bool]]:
    """List ``(dotted_key, default, is_secret)`` for every setting of ``cls``.

    Nested attrs classes are expanded into their own keys; an ``Optional``
    nested class is one key (its default is usually None). A required field's
    default is ``attrs.NOTHING``.
    """
    rows: list[tuple[str, Any, bool]] = []
    hints = type_hints(cls)
    for field in attrs.fields(cls):
        if not field.init:
            continue
        tp = hints[field.name]
        key = _join(prefix, _field_key(field))
        base = strip_annotated(tp)
        if attrs.has(base) and isinstance(base, type):
            rows.extend(iter_fields(base, key))
            continue
        rows.append((key, _default_of(field), is_secret(tp)))
    return rows


# -- the walker ---------------------------------------------------------------


class _Walker:
    """Collects problems while converting one section; holds no state beyond that."""

    def __init__(self, source_of: Callable[[str], str]) -> None:
        self.source_of = source_of
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, value: Any, reason: str, *, secret: bool) -> None:
        shown = MASK if secret and value is not None else _mask_text(value)
        try:
            source = self.source_of(key)
        except Exception:  # noqa: BLE001 - a broken lookup must not hide the real problem
            source = "unknown"
        self.problems.append(ConfigProblem(key, shown, reason, source))

    def convert(self, tp: Any, raw: Any, key: str, *, secret: bool) -> Any:
        """Convert ``raw`` to ``tp``; on failure record problems and return _INVALID."""
        secret = secret or is_secret(tp)
        try:
            return self._convert(tp, raw, key, secret)
        except TypeProblem as e:
            self.problem(key, raw, str(e), secret=secret)
            return _INVALID

    def _convert(self, tp: Any, raw: Any, key: str, secret: bool) -> Any:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *meta = typing.get_args(tp)
            if any(isinstance(m, SizeMarker) for m in meta):
                return self._unit(parse_size, raw)
            if any(isinstance(m, DurationMarker) for m in meta):
                return self._unit(parse_duration, raw)
            return self._convert(base, raw, key, secret)
        if tp is Any or tp is object:
            return _plain(raw)
        if tp is type(None) or tp is None:
            if raw is None:
                return None
            raise TypeProblem("expected null")
        if origin is Union or origin is types.UnionType:
            return self._union(typing.get_args(tp), raw, key, secret)
        if origin is Literal:
            return choice(typing.get_args(tp), raw)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return enum_value(tp, raw)
        if isinstance(tp, type) and attrs.has(tp):
            return self._attrs(tp, raw, key)
        if tp is bool:
            try:
                return parse_bool(raw)
            except ValueError as e:
                raise TypeProblem(str(e)) from None
        if tp is int:
            return to_int(raw)
        if tp is float:
            return to_float(raw)
        if tp is str:
            return to_str(raw)
        if origin in (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set,
                      collections.abc.MutableSequence, collections.abc.MutableSet, collections.abc.Iterable):
            return self._sequence(origin, typing.get_args(tp), raw, key, secret)
        if tp in (list, tuple, set, frozenset):
            return self._sequence(tp, (), raw, key, secret)
        if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping) or tp is dict:
            args = typing.get_args(tp) or (Any, Any)
            return self._mapping(args[0], args[1], raw, key, secret)
        return other(tp, raw)

    @staticmethod
    def _unit(parse: Callable[[Any], Any], raw: Any) -> Any:
        try:
            return parse(raw)
        except ValueError as e:
            raise TypeProblem(str(e)) from None

    def _union(self, args: tuple[Any, ...], raw: Any, key: str, secret: bool) -> Any:
        optional = type(None) in args
        arms = [a for a in args if a is not type(None)]
        if raw is None:
            if optional:
                return None
            raise TypeProblem(expected(arms))
        # An empty or "null" environment value means "unset" for a type that
        # cannot hold a string anyway.
        if optional and isinstance(raw, str) and raw.strip().lower() in _NULL_STRINGS:
            if not any(takes_strings(a) for a in arms):
                return None
        # Prefer the arm whose type the value already has, so that "5" stays a
        # string in `int | str` only when no exact match exists.
        arms.sort(key=lambda a: not exact(a, raw))
        first_failure: list[ConfigProblem] | None = None
        for arm in arms:
            trial = _Walker(self.source_of)
            value = trial.convert(arm, raw, key, secret=secret)
            if not trial.problems:
                return value
            if first_failure is None:
                first_failure = trial.problems
        if len(arms) == 1 and first_failure is not None:
            self.problems.extend(first_failure)
            return _INVALID
        raise TypeProblem(expected(arms))

    def _sequence(self, origin: Any, args: tuple[Any, ...], raw: Any, key: str, secret: bool) -> Any:
        if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple, set, frozenset)):
            raise TypeProblem("expected a list")
        items = list(raw)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise TypeProblem(f"expected a list of {len(args)} items")
            types_ = list(args)
        else:
            item_tp = args[0] if args else Any
            types_ = [item_tp] * len(items)
        before = len(self.problems)
        out = [self.convert(t, v, f"{key}[{i}]", secret=secret) for i, (t, v) in enumerate(zip(types_, items))]
        if len(self.problems) > before:
            return _INVALID
        if origin is tuple:
            return tuple(out)
        if origin in (set, collections.abc.MutableSet):
            return set(out)
        if origin in (frozenset, collections.abc.Set):
            return frozenset(out)
        return out

    def _mapping(self, key_tp: Any, value_tp: Any, raw: Any, key: str, secret: bool) -> Any:
        if not isinstance(raw, Mapping):
            raise TypeProblem("expected a mapping")
        before = len(self.problems)
        out = {}
        for k, v in raw.items():
            sub = _join(key, str(k))
            ck = self.convert(key_tp, k, sub, secret=False)
            out[ck] = self.convert(value_tp, v, sub, secret=secret)
        if len(self.problems) > before:
            return _INVALID
        return out

    def _attrs(self, cls: type, raw: Any, prefix: str) -> Any:
        # `s3:` with every sub-key commented out reads as null: mean "defaults".
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise TypeProblem("expected a mapping")
        hints = type_hints(cls)
        fields = [f for f in attrs.fields(cls) if f.init]
        by_key = {_field_key(f): f for f in fields}
        before = len(self.problems)
        given: dict[str, tuple[str, Any]] = {}  # field key -> (key as written, value)
        for raw_key, value in raw.items():
            written = str(raw_key)
            name = normalize_key(written)
            if name not in by_key:
                self.problem(
                    _join(prefix, written),
                    _shown_unknown(written, value),
                    f"unknown key; expected one of: {', '.join(by_key)}",
                    secret=False,
                )
                continue
            if name in given:
                other = given[name][0]
                field_secret = is_secret(hints[by_key[name].name])
                self.problem(
                    _join(prefix, name),
                    value,
                    f"both {other!r} and {written!r} are set; keep one",
                    secret=field_secret,
                )
                continue
            given[name] = (written, value)

        kwargs: dict[str, Any] = {}
        for name, field in by_key.items():
            tp = hints[field.name]
            key = _join(prefix, name)
            if name in given:
                kwargs[field.alias or field.name] = self.convert(tp, given[name][1], key, secret=False)
            elif field.default is attrs.NOTHING:
                base = strip_annotated(tp)
                if isinstance(base, type) and attrs.has(base):
                    # Expanding a required nested class names its own missing keys.
                    kwargs[field.alias or field.name] = self.convert(base, {}, key, secret=False)
                else:
                    self.problem(key, None, "required", secret=False)
        if len(self.problems) > before:
            # Still run the validators of the fields that did convert, so a
            # typo elsewhere does not hide `port: 70000`.
            self._blame_validators(cls, fields, hints, kwargs, given, prefix, None)
            return _INVALID
        try:
            return cls(**kwargs)
        except Exception as construction_error:  # noqa: BLE001 - validators raise anything
            self._blame_validators(cls, fields, hints, kwargs, given, prefix, construction_error)
            return _INVALID

    def _blame_validators(
        self,
        cls: type,
        fields: list[attrs.Attribute],
        hints: dict[str, Any],
        kwargs: dict[str, Any],
        given: dict[str, tuple[str, Any]],
        prefix: str,
        construction_error: Exception | None,
    ) -> None:
        """Run each field's converter and validator alone, so every failing field is named.

        attrs stops at the first failing validator; settings should list them
        all. Fields that did not convert keep their default in the stand-in
        instance (for validators that look at other fields) and are not
        validated again.
        """
        shadow = object.__new__(cls)
        values: dict[str, Any] = {}
        invalid: set[str] = set()
        for field in fields:
            arg = field.alias or field.name
            value = kwargs.get(arg, _INVALID)
            if value is _INVALID:
                if arg in kwargs:
                    invalid.add(field.name)
                value = _default_value(field, shadow)
            try:
                value = _apply_converter(field, value, shadow)
            except Exception:  # noqa: BLE001 - the validator pass below names the field
                pass
            values[field.name] = value
            object.__setattr__(shadow, field.name, value)
        blamed = False
        for field in fields:
            if field.validator is None or field.name in invalid or values[field.name] is attrs.NOTHING:
                continue
            try:
                field.validator(shadow, field, values[field.name])
            except Exception as e:  # noqa: BLE001
                name = _field_key(field)
                shown = given[name][1] if name in given else values[field.name]
                self.problem(_join(prefix, name), shown, error_message(e), secret=is_secret(hints[field.name]))
                blamed = True
        if not blamed and construction_error is not None:
            # A converter or __attrs_post_init__ refused the combination.
            self.problem(prefix or cls.__name__, "...", error_message(construction_error), secret=False)


# -- small helpers ------------------------------------------------------------


def _field_key(field: attrs.Attribute) -> str:
    return field.alias or field.name


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _default_of(field: attrs.Attribute) -> Any:
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return None if default.takes_self else default.factory()
    return default


def _default_value(field: attrs.Attribute, instance: Any) -> Any:
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory(instance) if default.takes_self else default.factory()
    return default


def _apply_converter(field: attrs.Attribute, value: Any, instance: Any) -> Any:
    converter = field.converter
    if converter is None:
        return value
    if isinstance(converter, attrs.Converter):
        args: list[Any] = [value]
        if converter.takes_self:
            args.append(instance)
        if converter.takes_field:
            args.append(field)
        return converter.converter(*args)
    return converter(value)


_SENSITIVE = ("secret", "password", "passwd", "token", "key", "credential", "pass")


def _shown_unknown(key: str, value: Any) -> Any:
    # An unknown key is often a misspelt secret (`secret_acess_key`): never echo it.
    if isinstance(value, Mapping):
        return "{...}"
    if any(word in key.lower() for word in _SENSITIVE) and value is not None:
        return MASK
    return _mask_text(value)


def _mask_text(value: Any) -> Any:
    """Credentials inside URLs are secrets in any setting (``records.url``, ``redis.url``)."""
    return mask_urls(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unstructure(value: Any, mask: bool) -> Any:
    if attrs.has(type(value)):
        hints = type_hints(type(value))
        out = {}
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if mask and item is not None and is_secret(hints[field.name]):
                out[field.name] = MASK
            else:
                out[field.name] = _unstructure(item, mask)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _unstructure(v, mask) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_unstructure(v, mask) for v in value]
    return _mask_text(value) if mask else value
