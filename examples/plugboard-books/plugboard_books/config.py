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
    #: createBook/updateBook need an identity (set by an auth plugin's
    #: plugboard_context) or the operator's server.admin_token. True only
    #: for a demo where anyone may write.
    allow_anonymous_mutations: bool = False
    #: Longest title and author name accepted, in characters.
    max_title_length: int = attrs.field(default=200, validator=validators.positive)
    max_author_name_length: int = attrs.field(default=100, validator=validators.positive)
