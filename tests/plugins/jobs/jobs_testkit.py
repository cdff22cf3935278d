"""Run ``plugboard serve|worker|scheduler`` as real subprocesses in tests.

A module with its own name rather than conftest (``from conftest import``
would pick whichever conftest was imported first). Used by the worker,
scheduler, reliability and cross-instance tests::

    project = write_project(tmp_path, {"jobs": {"broker": "redis"}, "redis": {"url": redis_url}})
    with Proc.worker(project) as worker, Proc.serve(project) as server:
        worker.wait_ready(); server.wait_ready()
        ...
        assert worker.stop() == 0          # SIGTERM, then waits

The process handling is the test kit's :class:`PlugboardProcess`; this adds
the jobs commands' ready lines, this folder on PYTHONPATH (the
``pb_jobs_tasks`` test plugin), and the jobs plugin's own env aliases to the
inherited variables that are dropped. On failure ``proc.output()`` tells what
happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard.testing import PlugboardProcess
from plugboard.testing import write_project as write_settings

HERE = Path(__file__).resolve().parent

READY = {
    "worker": "plugboard worker: consuming",
    "scheduler": "plugboard scheduler:",
}
# The jobs plugin's seed aliases: a developer's shell must not configure the processes.
JOBS_ENV_ALIASES = ("QUEUE_CONCURRENCY", "QUEUE_DASHBOARD")


def write_project(root: Path, settings: dict[str, Any]) -> Path:
    """A project folder with ``settings.yaml``: realtime + jobs + pb_jobs_tasks by default.

    Records default to a SQLite file shared by every process of the project.
    """
    data = dict(settings)
    data.setdefault("plugins", ["realtime", "jobs", "pb_jobs_tasks"])
    data["jobs"] = {"schedules": [], **(data.get("jobs") or {})}
    return write_settings(root, data)


class Proc(PlugboardProcess):
    """One ``plugboard <command>`` subprocess; a context manager that always kills it."""

    def __init__(self, command: str, root: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        super().__init__(
            command, root, *args, env=env, port=port, drop_env=JOBS_ENV_ALIASES, pythonpath=[HERE], ready_line=READY.get(command)
        )

    @classmethod
    def worker(cls, root: Path, *args: str, env: dict[str, str] | None = None) -> "Proc":
        return cls("worker", root, *args, env=env)

    @classmethod
    def scheduler(cls, root: Path, *args: str, env: dict[str, str] | None = None) -> "Proc":
        return cls("scheduler", root, *args, env=env)

    def close(self) -> None:
        # A process still running at the end is a crash to clean up, not a
        # shutdown to wait for (the tests stop the ones they mean to stop).
        if self.proc.poll() is None:
            self.kill()
        super().close()
