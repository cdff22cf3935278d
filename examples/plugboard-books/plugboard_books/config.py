"""``books:`` settings."""

from __future__ import annotations

import attrs

from plugboard import validators


@attrs.define(frozen=True, kw_only=True)
class BooksConfig:
    #: The most books one `books(first:)` page may return.
    max_page_size: int = attrs.field(default=100, validator=validators.positive)
    #: The page size when `first` is not given.
    default_page_size: int = attrs.field(default=20, validator=validators.positive)
