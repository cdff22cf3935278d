"""Shared by the hardening tests: hostile documents and a responsiveness probe.

A module with its own name, not conftest (see tests/core/core_testkit.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

GRAPHQL_RESPONSE = "application/graphql-response+json"
INTROSPECTION_QUERY = (Path(__file__).parent / "introspection_query.graphql").read_text()


def many_fragments(n: int = 10_000) -> str:
    """``n`` distinct fragments, each spread once (the issue's 508 KB document)."""
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(f"fragment F{i} on Book {{ id }}" for i in range(n))
    return f"{{ books {{ {spreads} }} }} {fragments}"


def deep(n: int = 4_000) -> str:
    """``books { author { books { ... } } }`` nested ``n`` fields deep."""
    opening, closing = [], []
    for i in range(n - 1):
        opening.append("books {" if i % 2 == 0 else "author {")
        closing.append("}")
    return "{ " + " ".join(opening) + " id " + " ".join(closing) + " }"


def aliases(n: int = 40_000) -> str:
    return "{ " + " ".join(f"a{i}: books {{ id }}" for i in range(n)) + " }"


def rss() -> int:
    """This process's resident set size, in bytes (Linux), after glibc hands its free heap back.

    glibc keeps freed memory in its arenas, as much as what ran earlier in the
    process left fragmented (in a full suite run, tests before this one):
    ``malloc_trim(0)`` returns it, so the reading is what is still held.
    """
    trim = _malloc_trim()
    if trim is not None:  # None: not glibc, the plain reading
        trim(0)
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


async def post(client: Any, query: str, **body: Any) -> tuple[int, dict]:
    resp = await client.post("/graphql", json={"query": query, **body}, headers={"Accept": GRAPHQL_RESPONSE})
    return resp.status, await resp.json(content_type=None)


async def while_responsive(client: Any, attack: Callable[[], Awaitable[Any]], budget: float = 0.1) -> tuple[Any, float]:
    """Run ``attack`` while ``{ __typename }`` is asked in a loop; returns its result and the slowest answer.

    The test client shares the server's event loop, so a document that
    blocks the loop delays these answers by as long as it blocks.
    """
    slowest = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal slowest
        while not done.is_set():
            started = time.perf_counter()
            status, body = await post(client, "{ __typename }")
            assert status == 200 and body["data"] == {"__typename": "Query"}, body
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    try:
        result = await attack()
    finally:
        await asyncio.sleep(0.02)
        done.set()
        await task
    return result, slowest


def error_code(body: dict) -> str | None:
    return body["errors"][0].get("extensions", {}).get("code")


def bearer_auth_plugin():
    """``Authorization: Bearer <user>`` (or ``connection_init`` ``{"authToken": ...}``) -> ``context.identity``; ``root`` has the ``admin`` role."""
    import types

    from plugboard import hookimpl

    def plugboard_context(context, request, connection_params):
        token = None
        if connection_params and isinstance(connection_params.get("authToken"), str):
            token = connection_params["authToken"]
        elif request is not None and request.headers.get("Authorization", "").startswith("Bearer "):
            token = request.headers["Authorization"][7:]
        if not token:
            return None
        return {"identity": token, "roles": ["admin"] if token == "root" else []}

    plugin = types.SimpleNamespace(plugboard_name="bearer_auth", __name__="bearer_auth")
    plugin.plugboard_context = hookimpl(plugboard_context)
    return plugin
