"""The uploads plugin's background task: ``uploads-cleanup`` (attached by the jobs plugin)."""

from __future__ import annotations

from typing import Any


def make_tasks(app: Any) -> dict[str, Any]:
    async def uploads_cleanup(job: Any, max_age: float = 3600.0) -> dict[str, int]:
        """Remove stale pending uploads and objects with no record (older than ``max_age`` seconds)."""
        from plugboard.plugins.uploads.keys import UPLOADS

        return await job.app[UPLOADS].cleanup(max_age=max_age)

    return {"uploads-cleanup": uploads_cleanup}
