"""Real Redis and PostgreSQL servers on free loopback ports, for tests.

Plugboard's own tests and third-party plugin tests use these instead of mocks:
each server runs from a private temporary directory, listens on 127.0.0.1 only
and is stopped, reaped and deleted by :meth:`stop` (or by the context manager).
SMTP and S3, which run on threads of the test process, are in
:mod:`plugboard.testing_threaded`.

A missing binary raises :class:`RuntimeError` with the install command, so a
test that needs a server fails instead of silently skipping.

::

    with RedisServer() as redis_srv, PostgresServer() as pg:
        ...  # redis_srv.url, pg.url
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Mapping

__all__ = ["free_port", "RedisServer", "PostgresServer"]

# How many fresh ports to try when the one picked by free_port() is taken by
# someone else before the server binds it (the race is inherent).
_PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop ``proc`` politely, then forcibly, and reap it (no zombie left)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _missing(what: str, package: str) -> RuntimeError:
    return RuntimeError(
        f"{what} not found; install it with: apt-get install {package} "
        f"(tests need a real {what}, they do not skip without one)"
    )


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port.

    :param port: the port to listen on; a free one if None.
    :param options: extra or overriding ``redis-server`` options, without the
        leading ``--`` (``{"appendonly": "yes"}`` for persistence tests).
    :param binary: the ``redis-server`` executable; found on PATH if None.
    :param startup_timeout: seconds to wait for the first PONG.
    """

    DEFAULT_OPTIONS: Mapping[str, str] = {"save": "", "appendonly": "no"}

    def __init__(
        self,
        *,
        port: int | None = None,
        options: Mapping[str, str] | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.port: int = port or 0
        self._fixed_port = port is not None
        self.options: dict[str, str] = {**self.DEFAULT_OPTIONS, **(options or {})}
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._proc_finalizer: weakref.finalize | None = None
        self._dir_finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path | None:
        return self.dir / "redis.log" if self.dir else None

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        if self.process is not None:
            raise RuntimeError("RedisServer is already running")
        binary = self.binary or shutil.which("redis-server")
        if binary is None or not os.path.exists(binary):
            raise _missing("redis-server", "redis-server")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="plugboard-redis-"))
            # Deletes the directory even if the test forgets stop() (at exit at the latest).
            self._dir_finalizer = weakref.finalize(self, shutil.rmtree, str(self.dir), ignore_errors=True)
        attempts = 1 if self._fixed_port else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port()
            try:
                self._spawn(binary)
                return self
            except _PortTaken:
                if attempt == attempts - 1:
                    raise RuntimeError(f"redis-server could not bind a port:\n{_tail(self.log_file)}") from None
        raise AssertionError("unreachable")

    def _spawn(self, binary: str) -> None:
        assert self.dir is not None
        cmd = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.log_file),
        ]
        for key, value in self.options.items():
            cmd += [f"--{key}", str(value)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process = proc
        self._proc_finalizer = weakref.finalize(self, _terminate, proc)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if proc.poll() is not None:
                self._reap()
                log = _tail(self.log_file)
                if "Address already in use" in log and not self._fixed_port:
                    raise _PortTaken()
                raise RuntimeError(f"redis-server exited with status {proc.returncode}:\n{log}")
            if self._ping():
                return
            if time.monotonic() > deadline:
                self._reap()
                raise RuntimeError(
                    f"redis-server did not answer PING within {self.startup_timeout}s:\n{_tail(self.log_file)}"
                )
            time.sleep(0.02)

    def _ping(self) -> bool:
        # A raw RESP PING: no client library needed, and "-LOADING" (replaying
        # the AOF after restart()) counts as not ready yet.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _reap(self) -> None:
        if self._proc_finalizer is not None:
            self._proc_finalizer()
        self._proc_finalizer = None
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and directory (persisted data survives)."""
        self._reap()
        fixed = self._fixed_port
        self._fixed_port = True
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    def stop(self) -> None:
        """Stop and reap the server, then delete its directory."""
        self._reap()
        if self._dir_finalizer is not None:
            self._dir_finalizer()
        self._dir_finalizer = None
        self.dir = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"<RedisServer {self.url} {state}>"


class _PortTaken(Exception):
    """Another process bound the port between our check and the server's bind."""


_PG_BINARIES = ("initdb", "postgres", "pg_isready", "psql")


def _complete_bindir(d: Path) -> bool:
    return all((d / name).is_file() for name in _PG_BINARIES)


def find_postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_isready``.

    ``pg_config --bindir`` first, then the newest ``/usr/lib/postgresql/*/bin``
    (Debian keeps the server binaries off PATH), then PATH.
    """

    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(d: str) -> tuple[int, ...]:
        v = Path(d).parent.name
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).parent)
    for d in candidates:
        if _complete_bindir(d):
            return d
    raise _missing("PostgreSQL server (initdb, postgres)", "postgresql")


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port.

    ``initdb`` runs into a temporary directory with trust authentication for
    the ``postgres`` superuser, and durability is switched off for speed.
    PostgreSQL refuses to run as root, so when the tests run as root the
    cluster is owned by, and runs as, the ``postgres`` OS user.

    :param port: the port to listen on; a free one if None.
    :param database: the database created at start-up (used by :attr:`url`).
    :param bindir: the directory of the server binaries; found if None.
    :param settings: extra ``-c name=value`` server settings.
    :param os_user: the OS user to run as when root (``postgres``).
    :param startup_timeout: seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        database: str = "plugboard",
        bindir: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
        os_user: str = "postgres",
        startup_timeout: float = 30.0,
    ) -> None:
        self.port: int = port or 0
        self._fixed_port = port is not None
        self.database = database
        self.bindir = Path(bindir) if bindir else None
        self.settings = dict(settings or {})
        self.os_user = os_user
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        self._proc_finalizer: weakref.finalize | None = None
        self._dir_finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:<port>/<database>``."""
        return self.url_for(self.database)

    def url_for(self, database: str, driver: str = "asyncpg") -> str:
        """The SQLAlchemy URL of another database on this server."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path | None:
        return self.root / "data" if self.root else None

    @property
    def log_file(self) -> Path | None:
        return self.root / "postgres.log" if self.root else None

    def _run_as(self) -> dict:
        # Popen(user=, group=) drops privileges without preexec_fn (thread-safe).
        if os.geteuid() != 0:
            return {}
        uid, gid = self._owner()
        return {"user": uid, "group": gid, "extra_groups": []}

    def _owner(self) -> tuple[int, int]:
        import pwd

        try:
            entry = pwd.getpwnam(self.os_user)
        except KeyError:
            raise RuntimeError(
                f"running as root, but there is no {self.os_user!r} OS user to run PostgreSQL as; "
                "install it with: apt-get install postgresql"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def start(self) -> "PostgresServer":
        """initdb, start the server, wait until it is ready, create :attr:`database`."""
        if self.process is not None:
            raise RuntimeError("PostgresServer is already running")
        self.bindir = self.bindir or find_postgres_bindir()
        if not _complete_bindir(self.bindir):
            raise _missing(f"PostgreSQL server ({', '.join(_PG_BINARIES)} in {self.bindir})", "postgresql")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="plugboard-pg-"))
            self._dir_finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), ignore_errors=True)
            (self.root / "sock").mkdir()
            if os.geteuid() == 0:
                # initdb and postgres run as os_user: they must own the tree.
                uid, gid = self._owner()
                for p in (self.root, self.root / "sock"):
                    os.chown(p, uid, gid)
            self._initdb()
        attempts = 1 if self._fixed_port else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port()
            try:
                self._spawn()
                break
            except _PortTaken:
                if attempt == attempts - 1:
                    raise RuntimeError(f"postgres could not bind a port:\n{_tail(self.log_file)}") from None
        if self.database != "postgres" and not self._database_exists(self.database):
            self.create_database(self.database)
        return self

    def _initdb(self) -> None:
        assert self.root is not None and self.bindir is not None
        cmd = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        result = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=120, **self._run_as()
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def _spawn(self) -> None:
        assert self.root is not None and self.bindir is not None
        cmd = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.root / "sock"),
            "-h", "127.0.0.1",
            "-F",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off",
        ]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        # Opened by us (maybe as root) and inherited, so the server needs no
        # write access to the log's path.
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **self._run_as()
            )
        self.process = proc
        # SIGINT is PostgreSQL's "fast" shutdown: clients cut, children stopped.
        self._proc_finalizer = weakref.finalize(self, _terminate, proc, signal.SIGINT)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if proc.poll() is not None:
                self._reap()
                log_text = _tail(self.log_file)
                if "could not bind" in log_text and not self._fixed_port:
                    raise _PortTaken()
                raise RuntimeError(f"postgres exited with status {proc.returncode}:\n{log_text}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self._reap()
                raise RuntimeError(
                    f"postgres did not accept connections within {self.startup_timeout}s:\n{_tail(self.log_file)}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        assert self.bindir is not None
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as ``postgres`` and return its unaligned output."""
        if self.process is None or self.bindir is None:
            raise RuntimeError("PostgresServer is not running")
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {sql}\n{result.stderr}")
        return result.stdout.strip()

    def _database_exists(self, name: str) -> bool:
        return self.psql(f"SELECT 1 FROM pg_database WHERE datname = {_literal(name)}") == "1"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL (see :meth:`url_for`)."""
        self.psql(f"CREATE DATABASE {_ident(name)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self.psql(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def _reap(self) -> None:
        if self._proc_finalizer is not None:
            self._proc_finalizer()
        self._proc_finalizer = None
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self._reap()
        fixed = self._fixed_port
        self._fixed_port = True
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    def stop(self) -> None:
        """Stop the server (fast shutdown), reap it and delete its directory."""
        self._reap()
        if self._dir_finalizer is not None:
            self._dir_finalizer()
        self._dir_finalizer = None
        self.root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"<PostgresServer {self.url} {state}>"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


