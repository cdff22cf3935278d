"""Resolvers for books and authors; the records store comes from the context.

Also the ``bookUpdated(id)`` subscription: ``createBook`` and ``updateBook``
publish the stored book on the core's pubsub topic :data:`TOPIC`, so
subscribers on every instance sharing the pubsub see it (over WebSocket or
SSE when the real-time plugin serves them).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Any, AsyncIterator

import sqlalchemy as sa

from plugboard import keys
from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.cache import cached
from plugboard.providers import pubsub

logger = logging.getLogger("plugboard_books")

#: Every created or updated book is published here (payload: the book, JSON-safe).
TOPIC = "books.updated"


def _tables(context: Any) -> tuple[sa.Table, sa.Table]:
    tables = context.app[keys.METADATA].tables
    return tables["books_authors"], tables["books_books"]


def _config(context: Any):
    return context.app[keys.PLUGIN_CONFIGS]["books"]


def _book(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "author": {"id": row.author_id, "name": row.author_name},
        "publishedYear": row.published_year,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
    }


@functools.lru_cache(maxsize=8)
def _select_books(authors: sa.Table, books: sa.Table) -> sa.Select:
    # One query with the author joined in: `author { id name }` then needs no
    # further round trip per book. Built once per table pair: constructing a
    # Select costs more than running this one on SQLite.
    return sa.select(
        books.c.id,
        books.c.title,
        books.c.author_id,
        books.c.published_year,
        books.c.created_at,
        books.c.updated_at,
        authors.c.name.label("author_name"),
    ).join(authors, books.c.author_id == authors.c.id)


#: The largest id a SQLite or PostgreSQL BIGINT column holds.
_MAX_ID = 2**63 - 1


def _parse_id(value: Any, what: str = "id") -> int:
    try:
        parsed = int(value)
    except (TypeError, ValueError):
        parsed = -1
    if not 0 <= parsed <= _MAX_ID:
        raise GraphQLError(f"{what} {value!r} is not a book id", "BAD_USER_INPUT")
    return parsed


async def resolve_books(parent: Any, args: dict, context: Any, info: Any) -> list[dict]:
    config = _config(context)
    first = args.get("first")
    first = config.default_page_size if first is None else first
    if not 0 <= first <= config.max_page_size:
        raise GraphQLError(f"first must be between 0 and {config.max_page_size}", "BAD_USER_INPUT")
    authors, books = _tables(context)
    after = _parse_id(args["after"], "after") if args.get("after") is not None else 0
    query = _page_query(authors, books)
    async with context.app[keys.RECORDS].connect() as conn:
        rows = (await conn.execute(query, {"after": after, "first": first})).all()
    return [_book(r) for r in rows]


@functools.lru_cache(maxsize=8)
def _page_query(authors: sa.Table, books: sa.Table) -> sa.Select:
    return (
        _select_books(authors, books)
        .where(books.c.id > sa.bindparam("after"))
        .order_by(books.c.id)
        .limit(sa.bindparam("first"))
    )


# Cached by the cache plugin when it runs (a plain call otherwise); an
# updateBook returning this book invalidates its tag everywhere.
@cached(ttl=300, tags=lambda book, *args, **kwargs: [f"Book:{book['id']}"] if book else ["Book"])
async def resolve_book(parent: Any, args: dict, context: Any, info: Any) -> dict | None:
    authors, books = _tables(context)
    async with context.app[keys.RECORDS].connect() as conn:
        row = (await conn.execute(_select_books(authors, books).where(books.c.id == _parse_id(args["id"])))).first()
    return _book(row) if row else None


async def resolve_authors(parent: Any, args: dict, context: Any, info: Any) -> list[dict]:
    authors, _ = _tables(context)
    async with context.app[keys.RECORDS].connect() as conn:
        rows = (await conn.execute(sa.select(authors).order_by(authors.c.id))).all()
    loaders = context.get("loaders")  # the cache plugin's per-request DataLoaders, when it runs
    if loaders is not None:
        # `authors { books }`: the first Author.books fetches every author's books at once.
        loaders.get(books_by_author).want(r.id for r in rows)
    return [{"id": r.id, "name": r.name} for r in rows]


async def books_by_author(author_ids: list[int], context: Any) -> list[list[dict]]:
    """DataLoader batch: the books of several authors in one query."""
    authors, books = _tables(context)
    query = _select_books(authors, books).where(books.c.author_id.in_(author_ids)).order_by(books.c.id)
    async with context.app[keys.RECORDS].connect() as conn:
        rows = (await conn.execute(query)).all()
    grouped: dict[int, list[dict]] = {author_id: [] for author_id in author_ids}
    for r in rows:
        grouped[r.author_id].append(_book(r))
    return [grouped[author_id] for author_id in author_ids]


async def resolve_author_books(parent: dict, args: dict, context: Any, info: Any) -> list[dict]:
    loaders = context.get("loaders")
    if loaders is not None:
        return await loaders.get(books_by_author).load(parent["id"])
    return (await books_by_author([parent["id"]], context))[0]


def _check_writer(context: Any) -> None:
    """Mutations need someone to answer for them: an identity, or the operator."""
    if context.identity is not None or _config(context).allow_anonymous_mutations or is_admin(context):
        return
    raise GraphQLError("sign in to add or change books", "UNAUTHENTICATED")


def _check_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise GraphQLError(f"{what} must not be empty", "BAD_USER_INPUT")
    if len(value) > limit:
        raise GraphQLError(f"{what} is longer than {limit} characters", "BAD_USER_INPUT", extensions={"maxLength": limit})
    return value


async def _author_id(conn: Any, authors: sa.Table, name: str) -> int:
    found = (await conn.execute(sa.select(authors.c.id).where(authors.c.name == name))).scalar()
    if found is not None:
        return found
    return (await conn.execute(sa.insert(authors).values(name=name))).inserted_primary_key[0]


async def resolve_create_book(parent: Any, args: dict, context: Any, info: Any) -> dict:
    _check_writer(context)
    config = _config(context)
    data = args["input"]
    title = _check_text(data["title"], "title", config.max_title_length)
    author_name = _check_text(data["authorName"], "authorName", config.max_author_name_length)
    authors, books = _tables(context)
    now = dt.datetime.now(dt.timezone.utc)
    async with context.app[keys.RECORDS].begin() as conn:
        author_id = await _author_id(conn, authors, author_name)
        result = await conn.execute(
            sa.insert(books).values(
                title=title,
                author_id=author_id,
                published_year=data.get("publishedYear"),
                created_at=now,
                updated_at=now,
            )
        )
        book_id = result.inserted_primary_key[0]
        row = (await conn.execute(_select_books(authors, books).where(books.c.id == book_id))).one()
    book = _book(row)
    await _publish(context, book)
    return book


async def resolve_update_book(parent: Any, args: dict, context: Any, info: Any) -> dict:
    _check_writer(context)
    config = _config(context)
    book_id = _parse_id(args["id"])
    data = args["input"]
    authors, books = _tables(context)
    values: dict[str, Any] = {"updated_at": dt.datetime.now(dt.timezone.utc)}
    if data.get("title") is not None:
        values["title"] = _check_text(data["title"], "title", config.max_title_length)
    author_name = None
    if data.get("authorName") is not None:
        author_name = _check_text(data["authorName"], "authorName", config.max_author_name_length)
    async with context.app[keys.RECORDS].begin() as conn:
        if author_name is not None:
            values["author_id"] = await _author_id(conn, authors, author_name)
        if "publishedYear" in data:
            values["published_year"] = data["publishedYear"]
        result = await conn.execute(sa.update(books).where(books.c.id == book_id).values(**values))
        if result.rowcount == 0:
            raise GraphQLError(f"no book with id {book_id}", "NOT_FOUND")
        row = (await conn.execute(_select_books(authors, books).where(books.c.id == book_id))).one()
    book = _book(row)
    await _publish(context, book)
    return book


def _json_safe(book: dict[str, Any]) -> dict[str, Any]:
    return {**book, "createdAt": book["createdAt"].isoformat(), "updatedAt": book["updatedAt"].isoformat()}


def _from_event(payload: Any) -> dict[str, Any] | None:
    # DateTime's output coercion calls .isoformat(): turn the strings that
    # crossed the pubsub as JSON back into datetimes.
    try:
        return {
            **payload,
            "createdAt": dt.datetime.fromisoformat(payload["createdAt"]),
            "updatedAt": dt.datetime.fromisoformat(payload["updatedAt"]),
        }
    except (KeyError, TypeError, ValueError):
        return None


async def _publish(context: Any, book: dict[str, Any]) -> None:
    # The change is committed; failing the mutation would invite a retry of
    # something that already happened. Only the live update can be lost.
    await pubsub.publish(context.app, TOPIC, _json_safe(book), what=f"book {book['id']}")


async def subscribe_book_updated(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    wanted = _parse_id(args["id"]) if args.get("id") is not None else None
    try:
        async for book in pubsub.events(context.app, TOPIC, _from_event):
            if wanted is None or book.get("id") == wanted:
                yield {"bookUpdated": book}
    except LookupError:
        raise GraphQLError("subscriptions need the pubsub, which is not running", "SERVICE_UNAVAILABLE") from None


RESOLVERS = {
    "Query.books": resolve_books,
    "Query.book": resolve_book,
    "Query.authors": resolve_authors,
    "Author.books": resolve_author_books,
    "Mutation.createBook": resolve_create_book,
    "Mutation.updateBook": resolve_update_book,
}

SUBSCRIPTIONS = {
    "Subscription.bookUpdated": subscribe_book_updated,
}
