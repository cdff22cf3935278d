"""The benchmark's Plugboard plugin: one no-op task (loaded by dotted path with
bench/jobs on PYTHONPATH)."""

from __future__ import annotations

from typing import Any

from plugboard import hookimpl


async def noop() -> None:
    return None


@hookimpl
def plugboard_tasks() -> dict[str, Any]:
    return {"noop": noop}
