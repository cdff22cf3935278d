"""``books:`` settings."""

from __future__ import annotations

import attrs


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError("expected a positive number")


@attrs.define(frozen=True, kw_only=True)
class BooksConfig:
    #: The most books one `books(first:)` page may return.
    max_page_size: int = attrs.field(default=100, validator=_positive)
    #: The page size when `first` is not given.
    default_page_size: int = attrs.field(default=20, validator=_positive)
