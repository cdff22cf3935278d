"""plugboard-books: an example third-party Plugboard plugin.

Enabled by `plugins: [books]` in settings.yaml once installed; everything it
contributes goes through Plugboard's hooks, as any pip-installed plugin would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl

from plugboard_books.config import BooksConfig
from plugboard_books.resolvers import RESOLVERS, SUBSCRIPTIONS
from plugboard_books.tables import define_tables

__version__ = "0.1.0"


@hookimpl
def plugboard_config_class() -> type:
    return BooksConfig


@hookimpl
def plugboard_schema() -> Path:
    return Path(__file__).with_name("schema.graphql")


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return dict(RESOLVERS)


@hookimpl
def plugboard_subscriptions() -> dict[str, Any]:
    return dict(SUBSCRIPTIONS)


@hookimpl
def plugboard_tables(metadata: Any) -> None:
    define_tables(metadata)
