"""Bare Tartiflette behind a minimal aiohttp handler, serving the peers schema.

Tuned as Plugboard is (sequential list and parent coercion, uvloop, the
parsed document cached by Tartiflette's own LRU), with the same resolvers.

    python bench/peers/bare_tartiflette.py --port 8001
"""

from __future__ import annotations

import argparse
import json

import uvloop
from aiohttp import web
from tartiflette import Resolver, Scalar, create_engine

import library


async def build() -> web.Application:
    for key, fn in library.RESOLVERS.items():
        Resolver(key, schema_name="peers")(fn)
    Scalar("Money", schema_name="peers")(library.Money())
    engine = await create_engine(
        "type Query\n" + library.SDL, schema_name="peers", coerce_list_concurrently=False, coerce_parent_concurrently=False
    )

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        result = await engine.execute(body["query"], operation_name=body.get("operationName"), variables=body.get("variables"))
        return web.Response(body=json.dumps(result, separators=(",", ":")).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/graphql", handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(build(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
