"""The peers benchmark's data and resolvers, in memory (mirrored in server.mjs).

A Plugboard plugin (declared by its module name, ``library``, with
bench/peers on ``PYTHONPATH``) and the resolver map the bare Tartiflette
server registers. The data is computed, the same way as in server.mjs, so
every server answers the same bytes of data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl

SDL = Path(__file__).with_name("schema.graphql").read_text()
KINDS = ("NOVEL", "POETRY", "ESSAY")
AUTHORS = [{"id": str(i), "name": f"Author {i}"} for i in range(20)]
BOOKS = [
    {"id": str(i), "title": f"Book {i}", "author_id": i % 20, "year": 1900 + i % 120, "price": i * 137 % 10000, "kind": KINDS[i % 3]}
    for i in range(200)
]
BY_AUTHOR = {a["id"]: [b for b in BOOKS if b["author_id"] == int(a["id"])] for a in AUTHORS}


async def books(parent: Any, args: dict, context: Any, info: Any) -> list[dict]:
    return BOOKS[: args.get("first") or 20]


async def book_author(parent: dict, args: dict, context: Any, info: Any) -> dict:
    return AUTHORS[parent["author_id"]]


async def author_books(parent: dict, args: dict, context: Any, info: Any) -> list[dict]:
    return BY_AUTHOR[parent["id"]]


async def search(parent: Any, args: dict, context: Any, info: Any) -> list[dict]:
    out = []
    for i in range(args.get("first") or 10):
        if i % 2:
            out.append({**BOOKS[i], "_typename": "Book"})
        else:
            out.append({**AUTHORS[i % 20], "_typename": "Author"})
    return out


async def node(parent: Any, args: dict, context: Any, info: Any) -> dict | None:
    ident = args["id"]
    if ident.startswith("a"):
        return {**AUTHORS[int(ident[1:]) % 20], "_typename": "Author"}
    return {**BOOKS[int(ident) % 200], "_typename": "Book"}


class Money:
    """Cents as a decimal string."""

    def coerce_output(self, value: int) -> str:
        return f"{value // 100}.{value % 100:02d}"

    def coerce_input(self, value: Any) -> int:
        return int(value)

    def parse_literal(self, ast: Any) -> Any:
        return int(ast.value)


RESOLVERS = {
    "Query.books": books,
    "Book.author": book_author,
    "Author.books": author_books,
    "Query.search": search,
    "Query.node": node,
}


@hookimpl
def plugboard_schema() -> str:
    return SDL


@hookimpl
def plugboard_resolvers() -> dict:
    return dict(RESOLVERS)


@hookimpl
def plugboard_scalars() -> dict:
    return {"Money": Money}
