"""Helpers for the built-in job types' tests (imported by test modules and the conftest)."""

from __future__ import annotations

import uuid

from aiohttp import web

from plugboard.config import structure
from plugboard.plugins.jobs.builtin.config import BuiltinConfig


class FakeJob:
    """A TaskContext stand-in: records progress."""

    def __init__(self, app: web.Application, type: str = "test", attempt: int = 1) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.type = type
        self.attempt = attempt
        self.app = app
        self.reported: list[float] = []

    async def progress(self, percent: float) -> None:
        self.reported.append(percent)


def builtin_config(data: dict | None = None) -> BuiltinConfig:
    """A BuiltinConfig from a ``jobs:``-style mapping (same validation as settings)."""
    return structure(BuiltinConfig, data or {}, section="jobs", source_of=lambda key: "test")


BOOKS_DATASET = {
    "query": "{ books(first: 100) { id title publishedYear author { name } } }",
    "path": "books",
}
