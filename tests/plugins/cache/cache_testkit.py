"""A test plugin with @cacheControl hints, counting its resolver calls; identity from ``X-User``."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from plugboard import hookimpl
from plugboard.app import create_app
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.cache import cache_hint, invalidate
from plugboard.settings import Settings

SDL = """
type Item @cacheControl(maxAge: 30) {
  id: ID!
  name: String!
  secret: String @cacheControl(scope: PRIVATE)
}
extend type Query {
  items: [Item!]!
  item(id: ID!): Item
  me: String @cacheControl(maxAge: 30, scope: PRIVATE)
  short: Int @cacheControl(maxAge: 2)
  slow: Int @cacheControl(maxAge: 30)
  failing: Int @cacheControl(maxAge: 30)
  unhinted: Int
  dynamicPrivate: String @cacheControl(maxAge: 30)
  big(size: Int!): String @cacheControl(maxAge: 30)
  never: Int @cacheControl(maxAge: 0)
}
extend type Mutation {
  renameItem(id: ID!, name: String!): Item!
  dropItem(id: ID!): Boolean!
}
"""


class Fixture:
    """Items 1..3; ``calls`` counts resolver runs per field."""

    def __init__(self) -> None:
        self.items = {str(i): {"id": str(i), "name": f"item {i}", "secret": None} for i in (1, 2, 3)}
        self.calls: Counter[str] = Counter()
        self.slow_delay = 0.2

    @hookimpl
    def plugboard_schema(self) -> str:
        return SDL

    @hookimpl
    def plugboard_context(self, request: Any) -> dict[str, Any]:
        user = request.headers.get("X-User") if request is not None else None
        return {"identity": user}

    @hookimpl
    def plugboard_resolvers(self) -> dict[str, Any]:
        fx = self

        async def items(parent, args, context, info):
            fx.calls["items"] += 1
            return [dict(v, secret=f"secret of {context.identity}") for v in fx.items.values()]

        async def item(parent, args, context, info):
            fx.calls["item"] += 1
            found = fx.items.get(str(args["id"]))
            return dict(found, secret=f"secret of {context.identity}") if found else None

        async def me(parent, args, context, info):
            fx.calls["me"] += 1
            return context.identity

        async def short(parent, args, context, info):
            fx.calls["short"] += 1
            return fx.calls["short"]

        async def slow(parent, args, context, info):
            fx.calls["slow"] += 1
            await asyncio.sleep(fx.slow_delay)
            return fx.calls["slow"]

        async def failing(parent, args, context, info):
            fx.calls["failing"] += 1
            raise GraphQLError("nope", "NOPE")

        async def unhinted(parent, args, context, info):
            fx.calls["unhinted"] += 1
            return fx.calls["unhinted"]

        async def dynamic_private(parent, args, context, info):
            fx.calls["dynamicPrivate"] += 1
            cache_hint(context, scope="PRIVATE", max_age=10)
            return f"for {context.identity}"

        async def big(parent, args, context, info):
            fx.calls["big"] += 1
            return "x" * args["size"]

        async def never(parent, args, context, info):
            fx.calls["never"] += 1
            return fx.calls["never"]

        async def rename(parent, args, context, info):
            found = fx.items[str(args["id"])]
            found["name"] = args["name"]
            return dict(found)

        async def drop(parent, args, context, info):
            fx.items.pop(str(args["id"]), None)
            await invalidate(context.app, [f"Item:{args['id']}", "Item"])
            return True

        return {
            "Query.items": items,
            "Query.item": item,
            "Query.me": me,
            "Query.short": short,
            "Query.slow": slow,
            "Query.failing": failing,
            "Query.unhinted": unhinted,
            "Query.dynamicPrivate": dynamic_private,
            "Query.big": big,
            "Query.never": never,
            "Mutation.renameItem": rename,
            "Mutation.dropItem": drop,
        }


def make_app(tmp_path, data: dict | None = None, plugins=()):
    data = dict(data or {})
    data.setdefault("plugins", ["cache"])
    data.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
    return create_app(Settings.from_mapping(data, root=tmp_path), plugins=list(plugins))


async def post(client, query, variables=None, user=None, **headers):
    if user:
        headers["X-User"] = user
    resp = await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    return resp, await resp.json(content_type=None)


async def get(client, query, variables=None, user=None, **headers):
    import json

    headers.setdefault("apollo-require-preflight", "1")
    if user:
        headers["X-User"] = user
    params = {"query": query}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    resp = await client.get("/graphql", params=params, headers=headers)
    return resp, (await resp.read())
