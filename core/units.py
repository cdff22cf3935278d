"""Human units in settings: sizes (``10MB``), durations (``1h30m``) and secrets.

Deployers write sizes and durations the way they say them, so settings accept
``10MB``, ``512KiB``, ``500ms`` or ``1h30m`` as well as plain numbers (bytes and
seconds). :func:`parse_size` and :func:`parse_duration` turn either form into
an ``int`` of bytes or a ``float`` of seconds and raise ``ValueError`` with a
message that says what was expected. The :data:`Size`, :data:`Duration` and
:data:`Secret` annotations mark attrs fields so :mod:`plugboard.config` knows
to parse them (or, for secrets, to mask them as ``'***'`` wherever a value is
shown); the marker objects carry no behaviour of their own. Credentials inside
URLs (``postgresql://user:pw@host/db``) are secrets too, in any setting:
:func:`mask_url` and :func:`mask_urls` hide them wherever settings, errors or
logs are shown, and :class:`MaskURLsFilter` does so for log records.
"""

from __future__ import annotations

import logging
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

__all__ = [
    "DURATION",
    "SECRET",
    "SIZE",
    "Duration",
    "DurationMarker",
    "Secret",
    "SecretMarker",
    "Size",
    "SizeMarker",
    "MaskURLsFilter",
    "mask_url",
    "mask_urls",
    "parse_duration",
    "parse_size",
]

SIZE_ERROR = "not a size; expected e.g. '10MB'"
DURATION_ERROR = "not a duration; expected e.g. '30s', '15m' or '1h'"


class _Marker:
    """Base of the annotation markers; equal when of the same class."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def __repr__(self) -> str:
        return type(self).__name__.removesuffix("Marker").upper()


class SizeMarker(_Marker):
    """Marks an ``int`` field holding bytes, written as ``10MB`` in settings."""

    __slots__ = ()


class DurationMarker(_Marker):
    """Marks a ``float`` field holding seconds, written as ``30s`` in settings."""

    __slots__ = ()


class SecretMarker(_Marker):
    """Marks a ``str`` field whose value is shown as ``'***'``."""

    __slots__ = ()


SIZE = SizeMarker()
DURATION = DurationMarker()
SECRET = SecretMarker()

#: Bytes; settings may say ``10MB``, ``1.5GB``, ``512KiB`` or a plain integer.
Size = Annotated[int, SIZE]
#: Seconds; settings may say ``500ms``, ``30s``, ``1h30m``, ``2d`` or a number.
Duration = Annotated[float, DURATION]
#: A string never shown in messages or in ``plugboard config`` output.
Secret = Annotated[str, SECRET]

# Deployers of these configs expect binary multiples for KB/MB/GB (that is
# what upload limits in the seed meant), so "K" and "Ki" are the same.
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*", re.IGNORECASE)

_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")


def parse_size(value: object) -> int:
    """Return a size in bytes from an integer of bytes or a string such as ``'10MB'``.

    :raises ValueError: for anything else, including negatives and booleans.
    """
    # bool is an int subclass: `max_file_size: yes` must not mean one byte.
    if isinstance(value, bool):
        raise ValueError(SIZE_ERROR)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(SIZE_ERROR)
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise ValueError(SIZE_ERROR)
        return int(value)
    if not isinstance(value, str):
        raise ValueError(SIZE_ERROR)
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(SIZE_ERROR)
    number, prefix, binary, _byte = match.groups()
    if binary and not prefix:  # "10iB" is nobody's unit
        raise ValueError(SIZE_ERROR)
    try:
        amount = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the regex admits only digits
        raise ValueError(SIZE_ERROR) from None
    # Decimal keeps "1.1MB" exact before rounding to whole bytes.
    return int((amount * _SIZE_FACTORS[prefix.lower()]).to_integral_value())


def parse_duration(value: object) -> float:
    """Return seconds from a number of seconds or a string such as ``'1h30m'``.

    Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``; parts may be combined
    (``1h30m``). A bare number in a string means seconds.

    :raises ValueError: for anything else, including negatives and booleans.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_ERROR)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(DURATION_ERROR)
        return float(value)
    if not isinstance(value, str):
        raise ValueError(DURATION_ERROR)
    if _NUMBER_RE.fullmatch(value):
        return float(value)
    text = value.strip()
    if not text:
        raise ValueError(DURATION_ERROR)
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART_RE.match(text, pos)
        if match is None:
            raise ValueError(DURATION_ERROR)
        total += float(match.group(1)) * _DURATION_FACTORS[match.group(2).lower()]
        pos = match.end()
    return total


# A URL with a scheme, up to whitespace, quotes or brackets around it.
_URL_RE = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>()\[\]{}]+""")
_QUERY_PASSWORD_RE = re.compile(r"([?&](?:password|pass|pwd|secret|token)=)[^&#\s]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password (and ``password=`` query values) replaced by ``***``.

    Works on the text rather than re-serialising a parsed URL, so the rest of
    the URL reads exactly as the user wrote it.
    """
    masked = url
    scheme, sep, rest = url.partition("://")
    if sep:
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            masked = f"{scheme}://{user}:***@{hostport}{rest[len(netloc):]}"
    # redis-py and others also take the password from the query string.
    return _QUERY_PASSWORD_RE.sub(r"\1***", masked)


def mask_urls(text: str) -> str:
    """Every URL inside ``text`` (a message, a log line) passed through :func:`mask_url`."""
    if "://" not in text:
        return text
    return _URL_RE.sub(lambda m: mask_url(m.group(0)), text)


class MaskURLsFilter(logging.Filter):
    """A logging filter (for handlers) that masks credentials in URLs of each record's message.

    Libraries log connection failures with the URL they were given; this is
    the one place that catches them all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report
            return True
        masked = mask_urls(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_urls(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_urls(record.exc_text)
        return True
