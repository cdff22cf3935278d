"""Plugboard's pytest plugin (the ``plugboard`` pytest11 entry point): the plugin test kit.

Installed with Plugboard, so a third-party plugin's tests get the same
fixtures as the core's own, without copying any (as Datasette ships its
pytest plugin). Fixtures are grouped in blocks, one per concern; the plain
helpers they hand out live beside this module (:mod:`plugboard.testing_clients`,
:mod:`plugboard.testing_process`, :mod:`plugboard.testing_servers`,
:mod:`plugboard.testing_threaded`) and are re-exported here. Nothing runs at
import time, and servers start only when a test asks for them. Every fixture
cleans up what it made: clients and apps are closed (which drops the app's
Tartiflette schema), processes stopped, servers stopped and emptied.

::

    async def test_hello(plugboard_client):
        client = await plugboard_client({"plugins": ["reviews"], "reviews": {"greeting": "Hi"}})
        assert await client.gql_data("{ reviewsHello }") == {"reviewsHello": "Hi, world!"}
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Iterator, Mapping

import pytest

from plugboard.testing_clients import (
    EventStream,
    LegacyWS,
    PlugboardTestClient,
    TransportWS,
    eventually,
    gql,
    gql_data,
    subscribe,
)
from plugboard.testing_process import PlugboardProcess, clean_env, write_project
from plugboard.testing_servers import PostgresServer, RedisServer, free_port
from plugboard.testing_threaded import S3Server, SmtpMessage, SmtpServer

if TYPE_CHECKING:
    from aiohttp import web

try:
    # pytest-asyncio's decorator also works for plugin projects whose
    # pytest-asyncio runs in strict mode. Optional: Plugboard installs this
    # plugin wherever it is installed, and pytest must still start in an
    # environment without pytest-asyncio (only the async fixtures need it).
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - depends on the environment
    async_fixture = pytest.fixture

__all__ = [
    # Re-exported so a plugin's tests need one import: `from plugboard.testing import ...`.
    "EventStream",
    "LegacyWS",
    "PlugboardProcess",
    "PlugboardTestClient",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "SmtpMessage",
    "SmtpServer",
    "TransportWS",
    "clean_env",
    "eventually",
    "executor_mode",
    "free_port",
    "gql",
    "gql_data",
    "make_app",
    "subscribe",
    "write_project",
]


def make_app(
    settings: Mapping[str, Any] | None = None,
    *,
    plugins: Iterable[Any] = (),
    root: str | Path,
) -> "web.Application":
    """An app from settings overrides (``plugins`` defaults to none).

    ``server.data_dir`` defaults to ``<root>/var`` so SQLite files, uploads and
    the outbox stay in the test's folder.
    """
    from plugboard import keys
    from plugboard.app import create_app
    from plugboard.settings import Settings

    data: dict[str, Any] = {"plugins": [], **(settings or {})}
    data["server"] = {"data_dir": str(Path(root) / "var"), **(data.get("server") or {})}
    mode = executor_mode()
    graphql = data.get("graphql") or {}
    if mode != "differential" and "executor" not in graphql:
        data["graphql"] = {**graphql, "executor": mode}
    app = create_app(Settings.from_mapping(data, root=Path(root)), plugins=list(plugins))
    if mode == "differential" and graphql.get("executor", "planned") == "planned":
        app[keys.ENGINE].compare_executors = True
    return app


#: ``PLUGBOARD_TEST_EXECUTOR``: how apps made by the kit execute GraphQL.
EXECUTOR_MODES = ("differential", "planned", "tartiflette")


def executor_mode() -> str:
    """``PLUGBOARD_TEST_EXECUTOR`` (default ``differential``).

    - ``differential``: the planned executor answers, and every query (and
      subscription event) also runs through Tartiflette's; any difference in
      their JSON raises :class:`plugboard.graphql.differential.ExecutorMismatch`;
    - ``planned`` or ``tartiflette``: ``graphql.executor`` for every app whose
      test does not set it (CI runs the GraphQL tests under both).
    """
    mode = os.environ.get("PLUGBOARD_TEST_EXECUTOR", "differential")
    if mode not in EXECUTOR_MODES:
        raise ValueError(f"PLUGBOARD_TEST_EXECUTOR={mode!r}: expected one of {', '.join(EXECUTOR_MODES)}")
    return mode


# ---------------------------------------------------------------------------
# Apps and clients
# ---------------------------------------------------------------------------


@pytest.fixture
def plugboard_app(tmp_path: Path) -> Callable[..., "web.Application"]:
    """Factory: ``plugboard_app(settings=None, *, plugins=())`` -> a new, not started app.

    ``settings`` are overrides on the core's defaults, as a settings.yaml
    would hold them: ``{"plugins": ["reviews"], "reviews": {"greeting": "Hi"}}``.
    Declared plugins are found by entry-point name; ``plugins=[obj]`` registers
    plugin objects (a module, a namespace with ``@hookimpl`` functions) after
    them, for test-only hooks. Data lives under ``tmp_path/var``. Each call
    builds a separate app: two apps share nothing.
    """

    def make(settings: Mapping[str, Any] | None = None, *, plugins: Iterable[Any] = ()) -> "web.Application":
        return make_app(settings, plugins=plugins, root=tmp_path)

    return make


@async_fixture
async def plugboard_client(plugboard_app: Callable[..., "web.Application"]) -> AsyncIterator[Callable[..., Any]]:
    """Async factory: ``await plugboard_client(settings=None, *, plugins=())`` -> a started :class:`PlugboardTestClient`.

    Starts the app on a real loopback server (start-up hooks run) and returns
    aiohttp's TestClient with GraphQL helpers:

    - ``await client.gql(query, variables=None, headers=..., token=..., status=200)``: the response JSON;
    - ``await client.gql_data(query, variables)``: ``data``, failing on any error;
    - ``await client.ws(payload, legacy=False)``: an initialised :class:`TransportWS` (or :class:`LegacyWS`);
    - ``await client.sse(query, variables)``: an :class:`EventStream` in distinct connections mode.

    Instead of settings, pass an app (``plugboard_app(...)``) or an aiohttp
    ``TestServer`` wrapping one (for server options). Every client and app is
    closed after the test, in reverse order; shutdown hooks run then.
    """
    from aiohttp import web
    from aiohttp.test_utils import BaseTestServer, TestServer

    clients: list[PlugboardTestClient] = []

    async def make(
        settings: "Mapping[str, Any] | web.Application | BaseTestServer | None" = None,
        *,
        plugins: Iterable[Any] = (),
    ) -> PlugboardTestClient:
        if isinstance(settings, BaseTestServer):
            server = settings
        else:
            app = settings if isinstance(settings, web.Application) else plugboard_app(settings, plugins=plugins)
            server = TestServer(app)
        client = PlugboardTestClient(server)
        clients.append(client)
        await client.start_server()
        return client

    yield make
    for client in reversed(clients):
        await client.close()


# ---------------------------------------------------------------------------
# `plugboard serve` in a subprocess
# ---------------------------------------------------------------------------


@pytest.fixture
def plugboard_serve(tmp_path: Path) -> Iterator[Callable[..., PlugboardProcess]]:
    """Factory: ``plugboard_serve(project, *args, env=None, pythonpath=(), wait=True)`` -> a running :class:`PlugboardProcess`.

    ``project`` is a folder holding settings.yaml, or a settings mapping that
    is written to a new folder under ``tmp_path`` (see :func:`write_project`).
    The process listens on a free loopback port (``server.url``), gets an
    environment without ``PLUGBOARD_*`` variables, and with ``wait`` is
    ready (``/readyz`` answered 200) when returned. ``pythonpath`` folders let
    it import test plugins. After the test each process is stopped (SIGTERM,
    then SIGKILL) and its output printed, so pytest shows it for a failure.
    """
    procs: list[PlugboardProcess] = []

    def serve(
        project: str | Path | Mapping[str, Any],
        *args: str,
        env: Mapping[str, str] | None = None,
        pythonpath: Iterable[str | Path] = (),
        wait: bool = True,
    ) -> PlugboardProcess:
        if isinstance(project, Mapping):
            project = write_project(tmp_path / f"project-{len(procs)}", project)
        proc = PlugboardProcess.serve(project, *args, env=env, pythonpath=pythonpath)
        procs.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield serve
    for proc in procs:
        proc.close()
        print(f"--- plugboard {' '.join(proc.argv[3:])} (exit {proc.proc.returncode}) ---\n{proc.output()}")


# ---------------------------------------------------------------------------
# Real servers: Redis and PostgreSQL on free loopback ports.
#
# One server per test session (start-up costs ~0.1 s for Redis, ~1 s for
# PostgreSQL); tests isolate themselves by flushing (``redis_url``) or by
# using a database of their own (``postgres_url``).
# A missing binary fails the test with the apt-get command: never a skip.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` for the whole session (no persistence); prefer ``redis_url``."""
    server = RedisServer()
    try:
        # Inside the try: a failed start still deletes what it created.
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session; ``.url`` is its ``plugboard`` database.

    Prefer ``postgres_url``; ``create_database(name)``/``drop_database(name)``
    make others.
    """
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of the session server, with every database emptied first."""
    # Imported here so that merely loading the plugin costs nothing.
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL (``postgresql+asyncpg://…``) of an empty database made for this test.

    Dropped after the test (connections still open are cut): close the app
    or client using it first, which the kit's own fixtures do.
    """
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


# ---------------------------------------------------------------------------
# Real servers: SMTP (aiosmtpd) and S3 (moto in server mode), in-process threads
# ---------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server on ``smtp_server.host``/``smtp_server.port`` (plain, no AUTH), for this test.

    Accepted mail is in ``smtp_server.messages`` (:class:`SmtpMessage`:
    ``mail_from``, ``rcpt_tos``, parsed ``message``, ``raw``). Recipients
    ``reject…@`` are refused with 550 and ``busy…@`` with 451, to test
    failures.
    """
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="session")
def _plugboard_s3() -> Iterator[S3Server]:
    """The session's moto server behind ``s3_server`` (started on first use)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_server(_plugboard_s3: S3Server) -> Iterator[S3Server]:
    """An S3 endpoint (moto in server mode), empty for this test.

    ``s3_server.endpoint_url``, ``.region``, ``.access_key``/``.secret_key``;
    ``s3_server.client_kwargs()`` is ready for aiobotocore's or boto3's
    ``create_client("s3", **kwargs)``. One moto server serves the session;
    every bucket is deleted after each test.
    """
    _plugboard_s3.reset()
    try:
        yield _plugboard_s3
    finally:
        _plugboard_s3.reset()


# -- hangs -------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A test stopped by pytest-timeout also reports the stacks of its asyncio
    tasks: the thread stacks pytest-timeout prints show only the event loop
    waiting in ``select``, not which await never returned."""
    outcome = yield
    excinfo = call.excinfo
    if excinfo is not None and "from pytest-timeout" in str(excinfo.value):
        stacks = _asyncio_stacks(excinfo.tb)
        if stacks:
            outcome.get_result().sections.append(("asyncio tasks at the timeout", stacks))


def _asyncio_stacks(tb: Any) -> str:
    import asyncio
    import io

    # pytest-timeout's signal stops the loop inside run_forever(): its frames are in the traceback.
    while tb is not None and not isinstance(tb.tb_frame.f_locals.get("self"), asyncio.AbstractEventLoop):
        tb = tb.tb_next
    if tb is None:
        return ""
    out = io.StringIO()
    for task in asyncio.all_tasks(tb.tb_frame.f_locals["self"]):
        task.print_stack(file=out)
    return out.getvalue()
