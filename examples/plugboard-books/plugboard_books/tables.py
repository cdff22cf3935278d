"""The books plugin's tables in the records store."""

from __future__ import annotations

import sqlalchemy as sa

from plugboard.providers.records import UTCDateTime


def define_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    authors = sa.Table(
        "books_authors",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
    )
    books = sa.Table(
        "books_books",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("books_authors.id"), nullable=False, index=True),
        sa.Column("published_year", sa.Integer, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    return authors, books
