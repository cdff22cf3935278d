"""``plugboard serve`` (or any ``plugboard`` command) as a real subprocess, for tests.

What the deployer runs, on a free loopback port: :class:`PlugboardProcess`
starts the command with a clean environment (no inherited ``PLUGBOARD_*`` or
seed-alias variables, so the developer's shell cannot change a test), sends
its stdout and stderr to one anonymous temporary file that :meth:`output`
reads at any time, waits for ``/readyz`` (or a ready line), and always stops
and reaps the process on :meth:`close`::

    project = write_project(tmp_path / "proj", {"plugins": ["books"]})
    with PlugboardProcess.serve(project) as server:
        server.wait_ready()
        ...  # server.url
        assert server.stop() == 0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from plugboard.testing_servers import free_port

__all__ = ["PlugboardProcess", "clean_env", "write_project"]


def write_project(root: Path, settings: Mapping[str, Any]) -> Path:
    """Write ``root/settings.yaml`` from a mapping and return ``root``.

    ``plugins`` defaults to none and ``server.data_dir`` to ``var`` (inside
    ``root``), so every process of the project shares one SQLite file.
    """
    import yaml

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = {"plugins": [], **settings}
    data["server"] = {"data_dir": "var", **(data.get("server") or {})}
    (root / "settings.yaml").write_text(yaml.safe_dump(data))
    return root


def clean_env(extra: Mapping[str, str] | None = None, *, drop: Iterable[str] = (), pythonpath: Iterable[str | Path] = ()) -> dict[str, str]:
    """This process's environment without settings variables, plus ``extra``.

    Drops every ``PLUGBOARD_*`` variable, the core's seed aliases
    (``REDIS_URL``) and the names in ``drop`` (a plugin's own aliases);
    ``pythonpath`` entries go in front of an inherited ``PYTHONPATH``.
    """
    from plugboard.settings import CORE_ENV_ALIASES

    dropped = {*CORE_ENV_ALIASES, *drop}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k not in dropped}
    paths = [str(p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are printed
    env.update(extra or {})
    return env


class PlugboardProcess:
    """One ``plugboard <command> --root <root> [args]`` subprocess.

    :param command: ``serve``, ``worker``, or any other subcommand.
    :param root: the project folder (``--root``).
    :param args: more command-line arguments.
    :param env: variables added to :func:`clean_env`'s environment.
    :param drop_env: more inherited variables to remove (a plugin's aliases).
    :param pythonpath: folders put in front of ``PYTHONPATH`` (test plugins).
    :param port: passed as ``--port`` (``serve`` gets a free one by default).
    :param ready_line: :meth:`wait_ready` waits for this text in the output
        instead of ``/readyz`` (for commands without HTTP).
    """

    def __init__(
        self,
        command: str,
        root: str | Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        drop_env: Iterable[str] = (),
        pythonpath: Iterable[str | Path] = (),
        port: int | None = None,
        ready_line: str | None = None,
    ) -> None:
        if port is None and command == "serve":
            port = free_port()
        self.command = command
        self.root = Path(root)
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.ready_line = ready_line
        self._final_output: str | None = None
        # Anonymous and unlinked: nothing is left behind, not even in the
        # project folder (which may be the repository itself).
        self._log = tempfile.TemporaryFile()
        argv = [sys.executable, "-m", "plugboard.cli", command, "--root", str(self.root), *args]
        if port:
            argv += ["--port", str(port)]
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            env=clean_env(env, drop=drop_env, pythonpath=pythonpath),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the test's terminal is not its.
            start_new_session=True,
        )

    @classmethod
    def serve(cls, root: str | Path, *args: str, **kwargs: Any) -> "PlugboardProcess":
        """``plugboard serve`` on a free loopback port (not yet waited for)."""
        return cls("serve", root, *args, **kwargs)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str | None:
        """``ws://127.0.0.1:<port>`` (for WebSocket clients)."""
        return self.url.replace("http://", "ws://", 1) if self.url else None

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        if self._final_output is not None:
            return self._final_output
        fd = self._log.fileno()
        # pread: the child shares the file offset, so the reader must not move it.
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> "PlugboardProcess":
        """Block until ``/readyz`` answers 200 (or :attr:`ready_line` is printed).

        Raises AssertionError with the output if the process exits first or
        is not ready within ``timeout`` seconds.
        """
        if self.ready_line is None and self.url is None:
            raise ValueError(f"plugboard {self.command} has no port: pass ready_line= to wait for")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"plugboard {self.command} exited with {self.proc.returncode}:\n{self.output()}")
            if self._ready():
                return self
            time.sleep(0.05)
        raise AssertionError(f"plugboard {self.command} not ready in {timeout}s:\n{self.output()}")

    def _ready(self) -> bool:
        if self.ready_line is not None:
            return self.ready_line in self.output()
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait (SIGKILL after ``timeout``); the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL now (a crash)."""
        return self.stop(signal.SIGKILL, timeout=10)

    def close(self) -> None:
        """Stop the process if it still runs, keep its output, delete the log."""
        if self.proc.poll() is None:
            self.stop()
        if self._final_output is None:
            self._final_output = self.output()
            self._log.close()

    def __enter__(self) -> "PlugboardProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<PlugboardProcess {self.command} {self.url or ''} pid={self.pid} {state}>"
