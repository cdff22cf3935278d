"""A test plugin for ``plugboard serve`` subprocesses: a slow, cacheable field that logs each computation.

Each run of ``Query.slowAnswer`` appends the process id to the file named by
``PB_CACHE_SLOW_LOG``, so a test counts computations across instances.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from plugboard import hookimpl

SDL = """
extend type Query {
  slowAnswer(n: Int!): Int @cacheControl(maxAge: 60)
  slowFailing: Int @cacheControl(maxAge: 60)
}
"""


async def slow_answer(parent: Any, args: dict, context: Any, info: Any) -> int:
    with open(os.environ["PB_CACHE_SLOW_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    await asyncio.sleep(float(os.environ.get("PB_CACHE_SLOW_DELAY", "0.5")))
    return args["n"] * 2


async def slow_failing(parent: Any, args: dict, context: Any, info: Any) -> int:
    from plugboard.graphql.errors import GraphQLError

    with open(os.environ["PB_CACHE_SLOW_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    await asyncio.sleep(float(os.environ.get("PB_CACHE_SLOW_DELAY", "0.5")))
    raise GraphQLError("nope", "NOPE")


@hookimpl
def plugboard_schema() -> str:
    return SDL


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return {"Query.slowAnswer": slow_answer, "Query.slowFailing": slow_failing}
