"""Run ``plugboard serve|worker|scheduler`` as real subprocesses in tests.

A module with its own name rather than conftest (``from conftest import``
would pick whichever conftest was imported first). Used by the worker,
scheduler, reliability and cross-instance tests::

    project = write_project(tmp_path, {"jobs": {"broker": "redis"}, "redis": {"url": redis_url}})
    with Proc.worker(project) as worker, Proc.serve(project) as server:
        worker.wait_ready(); server.wait_ready()
        ...
        assert worker.stop() == 0          # SIGTERM, then waits

Every process gets this folder on PYTHONPATH (the ``pb_jobs_tasks`` test
plugin), no inherited PLUGBOARD_*/REDIS_URL variables, and its output in a
file; on failure ``proc.output()`` tells what happened.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

READY = {
    "worker": "plugboard worker: consuming",
    "scheduler": "plugboard scheduler:",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_project(root: Path, settings: dict[str, Any]) -> Path:
    """A project folder with ``settings.yaml``: realtime + jobs + pb_jobs_tasks by default.

    Records default to a SQLite file shared by every process of the project.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = dict(settings)
    data.setdefault("plugins", ["realtime", "jobs", "pb_jobs_tasks"])
    data.setdefault("server", {}).setdefault("data_dir", "var")
    data.setdefault("jobs", {}).setdefault("schedules", [])
    (root / "settings.yaml").write_text(yaml.safe_dump(data))
    return root


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k not in ("REDIS_URL", "QUEUE_CONCURRENCY", "QUEUE_DASHBOARD")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One ``plugboard <command>`` subprocess; a context manager that always stops it."""

    def __init__(self, command: str, root: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.command = command
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else None
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        self.log_path = logs / f"{command}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        argv = [sys.executable, "-m", "plugboard.cli", command, "--root", str(root), *args]
        if port:
            argv += ["--port", str(port)]
        self.proc = subprocess.Popen(argv, env=base_env(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    # -- constructors --------------------------------------------------------

    @classmethod
    def serve(cls, root: Path, *args: str, env: dict[str, str] | None = None) -> "Proc":
        return cls("serve", root, *args, env=env, port=free_port())

    @classmethod
    def worker(cls, root: Path, *args: str, env: dict[str, str] | None = None) -> "Proc":
        return cls("worker", root, *args, env=env)

    @classmethod
    def scheduler(cls, root: Path, *args: str, env: dict[str, str] | None = None) -> "Proc":
        return cls("scheduler", root, *args, env=env)

    # -- use -----------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> "Proc":
        """Until the ready line (worker, scheduler) or /readyz answers 200 (serve)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"plugboard {self.command} exited with {self.proc.returncode}:\n{self.output()}")
            if self._ready():
                return self
            time.sleep(0.05)
        raise AssertionError(f"plugboard {self.command} not ready in {timeout}s:\n{self.output()}")

    def _ready(self) -> bool:
        if self.command == "serve":
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False
        return READY[self.command] in self.output()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait; SIGKILL after ``timeout``. The exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL now (a crashed worker)."""
        return self.stop(signal.SIGKILL, timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
