"""Plugins used by the core's tests, passed to ``create_app(plugins=[...])``.

A module with its own name, not conftest: several conftest modules exist and
``from conftest import`` would pick whichever was imported first.
"""

from __future__ import annotations

import types
from typing import Any

import attrs

from plugboard import hookimpl
from plugboard.graphql.errors import GraphQLError


def make_plugin(name: str, **hooks: Any) -> types.SimpleNamespace:
    """A plugin object with the given hook functions (``plugboard_schema=...``)."""
    plugin = types.SimpleNamespace(plugboard_name=name, __name__=name)
    for hook, fn in hooks.items():
        setattr(plugin, hook, hookimpl(fn))
    return plugin


@attrs.define(frozen=True, kw_only=True)
class EchoConfig:
    greeting: str = "hello"


def echo_plugin() -> types.SimpleNamespace:
    """Queries and a mutation exercising args, errors, uploads and context."""

    async def hello(parent, args, context, info):
        return f"{info_config(context).greeting} {args.get('name') or 'world'}"

    async def boom(parent, args, context, info):
        raise RuntimeError("secret database password leaked")

    async def refuse(parent, args, context, info):
        raise GraphQLError("you may not", "FORBIDDEN")

    async def whoami(parent, args, context, info):
        return context.identity

    async def add(parent, args, context, info):
        return args["a"] + args["b"]

    async def echo_json(parent, args, context, info):
        return args["value"]

    async def upload(parent, args, context, info):
        f = args["file"]
        data = await f.read()
        return {"filename": f.filename, "mimetype": f.mimetype, "size": f.size, "text": data.decode(errors="replace")}

    async def uploads(parent, args, context, info):
        return [{"filename": f.filename, "mimetype": f.mimetype, "size": f.size, "text": (await f.read()).decode()} for f in args["files"]]

    def schema():
        return """
        type EchoFile { filename: String! mimetype: String! size: Int! text: String! }
        extend type Query {
          hello(name: String): String!
          boom: String
          refuse: String
          whoami: String
          echoJson(value: JSON): JSON
          echoDateTime(value: DateTime): DateTime
        }
        extend type Mutation {
          add(a: Int!, b: Int!): Int!
          upload(file: Upload!): EchoFile!
          uploads(files: [Upload!]!): [EchoFile!]!
        }
        """

    def resolvers():
        return {
            "Query.hello": hello,
            "Query.boom": boom,
            "Query.refuse": refuse,
            "Query.whoami": whoami,
            "Query.echoJson": echo_json,
            "Query.echoDateTime": echo_json,
            "Mutation.add": add,
            "Mutation.upload": upload,
            "Mutation.uploads": uploads,
        }

    def context_hook(context, request):
        auth = request.headers.get("Authorization", "") if request is not None else ""
        if auth == "Bearer bad":
            raise GraphQLError("invalid token", "UNAUTHENTICATED")
        if auth.startswith("Bearer "):
            return {"identity": auth[7:]}
        return None

    return make_plugin(
        "echo",
        plugboard_config_class=lambda: EchoConfig,
        plugboard_schema=schema,
        plugboard_resolvers=resolvers,
        plugboard_context=context_hook,
    )


def info_config(context) -> EchoConfig:
    from plugboard import keys

    return context.app[keys.PLUGIN_CONFIGS]["echo"]


