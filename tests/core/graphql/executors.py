"""Helpers for the executor tests: one schema and resolvers, run by both executors.

:func:`both` serves the same plugin from two apps, one per
``graphql.executor``, and returns each one's HTTP answer (status and raw
body), so a test compares what clients would receive, byte for byte.
"""

from __future__ import annotations

import json
import re
from typing import Any

from plugboard import keys


async def both(plugboard_client, plugins, query: str, variables: dict | None = None, settings: dict | None = None):
    """``(planned, tartiflette)``: ``(status, body bytes)`` of one POST to each app.

    ``plugins`` is a callable returning the plugin list, called once per app,
    so plugins with state (a log of calls) do not see each other's requests.
    """
    out = []
    for executor in ("planned", "tartiflette"):
        data = dict(settings or {})
        data["graphql"] = {**data.get("graphql", {}), "executor": executor}
        client = await plugboard_client(data, plugins=plugins())
        # Each app runs its own executor only: the comparison is ours.
        client.app[keys.ENGINE].compare_executors = False
        resp = await client.post(
            "/graphql",
            data=json.dumps({"query": query, "variables": variables}),
            # One request id: masked errors carry it.
            headers={"Content-Type": "application/json", "X-Request-ID": "same-for-both"},
        )
        # Object addresses in messages differ between two apps' fresh objects.
        out.append((resp.status, _ADDRESS.sub(b" at 0x", await resp.read())))
    return out[0], out[1]


_ADDRESS = re.compile(rb" at 0x[0-9a-f]+")


def planned_was_used(app: Any, query: str, operation_name: str | None = None) -> bool:
    """Whether the app's engine planned ``query`` (rather than falling back to Tartiflette)."""
    engine = app[keys.ENGINE]
    return engine.executor_for(engine.parse(query), operation_name) == "planned"
