"""Baseline server: bare Tartiflette behind a minimal aiohttp handler.

Serves the books schema with the very same resolver functions and records
store as the plugin, tuned the same way as Plugboard (sequential list
coercion, uvloop), so the benchmark measures what the runtime adds.

    python bench/baseline_tartiflette.py --root DIR --port 8001
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvloop
from aiohttp import web
from tartiflette import Resolver, create_engine

import plugboard_books
from plugboard import keys
from plugboard.providers.records import SQLRecordsStore
from plugboard_books.config import BooksConfig
from plugboard_books.resolvers import RESOLVERS
from plugboard_books.tables import define_tables

import sqlalchemy


class _Ctx:
    """What the books resolvers read from their context: ``context.app[...]``."""

    def __init__(self, app_state: dict) -> None:
        self.app = app_state


async def build(root: Path) -> web.Application:
    metadata = sqlalchemy.MetaData()
    define_tables(metadata)
    store = SQLRecordsStore("sqlite+aiosqlite:///plugboard.db", data_dir=root / "var", metadata=metadata)
    await store.start()
    state = {keys.METADATA: metadata, keys.RECORDS: store, keys.PLUGIN_CONFIGS: {"books": BooksConfig()}}
    ctx = _Ctx(state)
    for key, fn in RESOLVERS.items():
        Resolver(key, schema_name="baseline")(fn)
    sdl = "type Query\ntype Mutation\ntype Subscription\n" + Path(plugboard_books.__file__).with_name("schema.graphql").read_text()
    engine = await create_engine(sdl, schema_name="baseline", coerce_list_concurrently=False, coerce_parent_concurrently=False)

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        result = await engine.execute(
            body["query"], operation_name=body.get("operationName"), variables=body.get("variables"), context=ctx
        )
        return web.Response(body=json.dumps(result, separators=(",", ":"), default=str).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/graphql", handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(build(args.root), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
