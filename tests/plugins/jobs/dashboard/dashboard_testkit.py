"""What the dashboard tests share: a plugin contributing tasks the test controls,
a stand-in auth plugin, and an app factory with jobs, the dashboard and realtime on.

A module (not only fixtures) so the browser test and the HTTP tests use one
definition.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from plugboard import hookimpl
from plugboard.app import create_app
from plugboard.settings import Settings
from plugboard.tasks import TaskContext, retry

TOKEN = "dashboard-admin-token-0123456789"


class GatedTasks:
    """``gated(label)`` reports 10 %, waits until the test calls :meth:`release`
    (label), reports 60 %, then completes; ``broken`` always raises (two
    attempts); ``quick`` returns its argument."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        #: Set by release_all: gates made from then on start open.
        self.open = False

    def gate(self, label: str) -> asyncio.Event:
        return self.gates.setdefault(label, asyncio.Event())

    def started_event(self, label: str) -> asyncio.Event:
        return self.started.setdefault(label, asyncio.Event())

    def release(self, label: str) -> None:
        self.gate(label).set()

    def release_all(self) -> None:
        self.open = True
        for event in self.gates.values():
            event.set()

    @hookimpl
    def plugboard_tasks(self, app: Any, config: Any) -> dict:
        async def gated(job: TaskContext, label: str = "") -> dict:
            await job.progress(10)
            self.started_event(label).set()
            gate = self.gate(label)
            if self.open:
                gate.set()
            await gate.wait()
            await job.progress(60)
            return {"label": label, "attempt": job.attempt}

        @retry(attempts=2, backoff=0.01, max_backoff=0.02)
        async def broken(job: TaskContext, reason: str = "boom") -> None:
            raise RuntimeError(f"{reason} (attempt {job.attempt})")

        async def quick(value: int = 0) -> dict:
            return {"value": value}

        return {"gated": gated, "broken": broken, "quick": quick}


class RoleAuth:
    """``Authorization: Bearer <user>`` makes the user the identity; ``root`` has the admin role;
    ``bad`` is rejected by the auth plugin."""

    @hookimpl
    def plugboard_context(self, context: Any, request: Any, connection_params: Any) -> dict | None:
        from plugboard.graphql.errors import GraphQLError

        header = request.headers.get("Authorization", "") if request is not None else ""
        if not header.startswith("Bearer "):
            return None
        user = header[7:]
        if user == "bad":
            raise GraphQLError("invalid token", "UNAUTHENTICATED")
        return {"identity": user, "roles": ["admin"] if user == "root" else []}


def make_app(
    tmp_path: Path,
    *,
    token: str | None = TOKEN,
    jobs: dict | None = None,
    server: dict | None = None,
    realtime: bool = True,
    plugins: list | None = None,
    **sections: Any,
) -> web.Application:
    data: dict[str, Any] = {
        "plugins": ["realtime", "jobs"] if realtime else ["jobs"],
        "server": {"data_dir": str(tmp_path / "var"), **({"admin_token": token} if token else {}), **(server or {})},
        "jobs": {"dashboard": True, "backoff": "10ms", **(jobs or {})},
        **sections,
    }
    return create_app(Settings.from_mapping(data, root=tmp_path), plugins=plugins if plugins is not None else [GatedTasks()])
