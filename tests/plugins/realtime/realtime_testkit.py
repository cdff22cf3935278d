"""Helpers shared by the real-time feature tests (presence, chat, notifications).

A module with its own name rather than conftest: ``from conftest import``
would pick whichever conftest was imported first. HTTP requests and polling
come from the test kit (``plugboard.testing.gql``/``eventually``).
"""

from __future__ import annotations

from plugboard.testing import subscribe as kit_subscribe


def code(result) -> str:
    """``extensions.code`` of a result's first error."""
    return result["errors"][0]["extensions"]["code"]


async def subscribe(app, query, variables=None, user="alice"):
    """The kit's in-process ``subscribe`` as ``user`` (``connection_init`` ``authToken``; anonymous when None)."""
    return await kit_subscribe(app, query, variables, connection_params={"authToken": user} if user else None)
