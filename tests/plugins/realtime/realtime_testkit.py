"""Helpers shared by the real-time feature tests (presence, chat, notifications).

A module with its own name rather than conftest: ``from conftest import``
would pick whichever conftest was imported first. HTTP requests and polling
come from the test kit (``plugboard.testing.gql``/``eventually``).
"""

from __future__ import annotations

from plugboard import keys
from plugboard.graphql.operation import Operation


def code(result) -> str:
    """``extensions.code`` of a result's first error."""
    return result["errors"][0]["extensions"]["code"]


async def subscribe(app, query, variables=None, user="alice"):
    """Start a subscription through the app's runner, as a transport would; the result stream."""
    params = {"authToken": user} if user else None
    context = await app[keys.CONTEXT_BUILDER].build(app, None, request_id="test", transport="ws", connection_params=params)
    op = Operation(query=query, variables=variables, operation_name=None, extensions=None, context=context, transport="ws")
    runner = app[keys.RUNNER]
    runner.prepare(op, allowed_types=("query", "mutation", "subscription"))
    return await runner.subscribe(op)

