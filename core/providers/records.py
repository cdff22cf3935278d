"""The records store: one SQL database shared by every plugin.

Plugins describe their tables with SQLAlchemy Core (``plugboard_tables`` adds
``Table`` objects to the store's :class:`~sqlalchemy.MetaData`); start-up
creates the missing ones. Resolvers use :meth:`RecordsStore.connect` to read
and :meth:`RecordsStore.begin` to write. SQLite (``aiosqlite``) is the zero-setup
default; PostgreSQL (``asyncpg``) is the production choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Protocol, runtime_checkable

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from plugboard.errors import ProviderError

__all__ = ["RecordsStore", "SQLRecordsStore", "RecordsConfig", "UTCDateTime", "utc"]

# Arbitrary but fixed: serialises create_all between processes starting at
# once against the same PostgreSQL database.
_PG_DDL_LOCK = 0x706C7567


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` as an aware datetime in UTC, a naive one taken as UTC already (None stays None).

    The rule :class:`UTCDateTime` stores by; for comparing a date-time a
    client sent (the ``DateTime`` scalar leaves one without an offset naive)
    with the current time or a stored one.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """A date-time column that keeps the instant on every database: use it for every timestamp.

    PostgreSQL's ``timestamptz`` converts offsets itself, but SQLite stores
    the wall time and drops the offset: ``12:00+02:00`` would read back as
    12:00 UTC. Values are written in UTC (a naive one is taken as UTC
    already) and read back aware, in UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return utc(value) if isinstance(value, dt.datetime) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return utc(value) if isinstance(value, dt.datetime) else value


@attrs.define(frozen=True, kw_only=True)
class RecordsConfig:
    """The ``records`` settings section.

    :param url: a SQLAlchemy async URL; a relative SQLite path is resolved
        against ``server.data_dir``.
    :param echo: log every SQL statement.
    :param pool_size: connections kept open (ignored for in-memory SQLite).
    """

    url: str = "sqlite+aiosqlite:///plugboard.db"
    echo: bool = False
    pool_size: int = 5


@runtime_checkable
class RecordsStore(Protocol):
    """A SQL database for plugins' records (the ``records`` provider kind).

    Implementer's manual:

    - ``metadata``: a :class:`sqlalchemy.MetaData` that plugins add ``Table``
      objects to *before* :meth:`start`. Never replace it.
    - ``engine``: the :class:`~sqlalchemy.ext.asyncio.AsyncEngine`, for what
      the methods below do not cover.
    - ``dialect``: the SQLAlchemy dialect name, ``"sqlite"`` or
      ``"postgresql"``, for the rare dialect-specific statement.
    - :meth:`start`: connect, then create the tables of ``metadata`` that do
      not exist yet (``metadata.create_all`` through ``run_sync``); existing
      tables and their rows are left alone (no migrations). An unreachable
      database raises :class:`~plugboard.errors.ProviderError` naming the URL
      with its password masked, within a few seconds.
    - :meth:`close`: release every connection; safe to call twice.
    - :meth:`check`: one round trip (``SELECT 1``); raise ``ProviderError`` if
      the database does not answer in time. ``/readyz`` calls it.
    - :meth:`begin`: ``async with store.begin() as conn:`` a connection in a
      transaction, committed on success and rolled back on an exception.
    - :meth:`connect`: ``async with store.connect() as conn:`` a connection
      for reads (writes through it need an explicit ``await conn.commit()``).
    """

    metadata: sa.MetaData
    engine: AsyncEngine

    @property
    def dialect(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    def begin(self) -> AsyncContextManager[AsyncConnection]: ...

    def connect(self) -> AsyncContextManager[AsyncConnection]: ...


def resolve_url(url: str | URL, data_dir: Path | None = None) -> URL:
    """Parse ``url``; a relative SQLite file path is made absolute under ``data_dir``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or data_dir is None:
        return parsed
    database = parsed.database
    if _is_memory(parsed) or database.startswith("file:"):
        return parsed
    path = Path(database)
    if not path.is_absolute():
        parsed = parsed.set(database=str(Path(data_dir) / path))
    return parsed


def _is_memory(url: URL) -> bool:
    return not url.database or url.database == ":memory:" or "mode=memory" in str(url.query)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection: foreign keys are off by default in SQLite, and WAL lets
    # readers run while a writer commits.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        # The driver's own message, without SQLAlchemy's statement and link.
        orig = exc.orig
        inner = getattr(orig, "__cause__", None) or orig
        return f"{type(inner).__name__}: {inner}".strip()
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".strip()


class SQLRecordsStore:
    """:class:`RecordsStore` on SQLAlchemy 2 async Core (SQLite or PostgreSQL).

    :param url: ``sqlite+aiosqlite:///plugboard.db``,
        ``sqlite+aiosqlite:///:memory:``, ``postgresql+asyncpg://user:pw@host/db``.
    :param data_dir: where a relative SQLite path lives (created at start).
    :param echo: log every SQL statement.
    :param pool_size: connections kept open.
    :param metadata: the tables' metadata; a new one if None.
    :param connect_timeout: seconds before an unreachable database is an error.
    """

    def __init__(
        self,
        url: str,
        *,
        data_dir: Path | None = None,
        echo: bool = False,
        pool_size: int = 5,
        metadata: sa.MetaData | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.metadata = metadata if metadata is not None else sa.MetaData()
        self.connect_timeout = connect_timeout
        self._url = resolve_url(url, data_dir)
        # Creating the engine does no I/O: connecting waits for start().
        self.engine = self._create_engine(echo=echo, pool_size=pool_size)
        # In-memory SQLite is one shared connection: two transactions
        # interleaved on it wait for each other forever, so users take turns.
        self._turns = asyncio.Lock() if isinstance(self.engine.pool, StaticPool) else None

    def _create_engine(self, *, echo: bool, pool_size: int) -> AsyncEngine:
        url = self._url
        kwargs: dict[str, Any] = {"echo": echo}
        backend = url.get_backend_name()
        if backend == "sqlite":
            if _is_memory(url):
                # One connection for everyone: each new connection to
                # :memory: would otherwise be a new, empty database.
                kwargs["poolclass"] = StaticPool
            else:
                kwargs["pool_size"] = pool_size
        else:
            kwargs["pool_size"] = pool_size
            # Drops connections the server closed (restart, idle timeout).
            kwargs["pool_pre_ping"] = True
            if url.get_driver_name() == "asyncpg" and "timeout" not in url.query:
                kwargs["connect_args"] = {"timeout": self.connect_timeout}
        engine = create_async_engine(url, **kwargs)
        if backend == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    @property
    def url(self) -> URL:
        """The resolved URL; ``str()`` of it masks the password."""
        return self._url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _safe_url(self) -> str:
        return self._url.render_as_string(hide_password=True)

    async def start(self) -> None:
        """Connect and create the missing tables of :attr:`metadata`."""
        if self.dialect == "sqlite" and not _is_memory(self._url) and not self._url.database.startswith("file:"):
            try:
                Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ProviderError(f"records: cannot create the directory of {self._safe_url()}: {e}") from e
        # The whole start-up holds the DDL lock: on SQLite even the first
        # connection writes (journal_mode=WAL), and a second process starting
        # at that moment would get "database is locked".
        async with self._ddl_lock():
            try:
                # asyncpg's own timeout covers the connect; this one also covers
                # drivers without one and a server that accepts but never answers.
                async with asyncio.timeout(self.connect_timeout + 1):
                    conn = await self.engine.connect()
            except (Exception, asyncio.TimeoutError) as e:
                await self.engine.dispose()
                raise ProviderError(f"records: cannot connect to {self._safe_url()}: {_reason(e)}") from e
            try:
                async with conn.begin():
                    if self.dialect == "postgresql":
                        await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_DDL_LOCK})"))
                    await conn.run_sync(self.metadata.create_all)
            except sa.exc.SQLAlchemyError as e:
                raise ProviderError(f"records: cannot create tables in {self._safe_url()}: {_reason(e)}") from e
            finally:
                await conn.close()

    @contextlib.asynccontextmanager
    async def _ddl_lock(self) -> AsyncIterator[None]:
        # SQLite has no DDL lock of its own: two processes starting at once on
        # one file could both find a table missing. A lock file beside the
        # database serialises them (PostgreSQL uses an advisory lock instead).
        if self.dialect != "sqlite" or _is_memory(self._url) or self._url.database.startswith("file:"):
            yield
            return
        with open(f"{self._url.database}.lock", "a") as lock:
            await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def check(self) -> None:
        """Raise :class:`ProviderError` unless the database answers ``SELECT 1``."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except (Exception, asyncio.TimeoutError) as e:
            raise ProviderError(f"records: {self._safe_url()} does not answer: {_reason(e)}") from e

    def begin(self) -> AsyncContextManager[AsyncConnection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        return self._one_at_a_time(self.engine.begin) if self._turns is not None else self.engine.begin()

    def connect(self) -> AsyncContextManager[AsyncConnection]:
        """A connection for reads."""
        return self._one_at_a_time(self.engine.connect) if self._turns is not None else self.engine.connect()

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, open_: Any) -> AsyncIterator[AsyncConnection]:
        assert self._turns is not None
        async with self._turns:
            async with open_() as conn:
                yield conn

    def __repr__(self) -> str:
        return f"<SQLRecordsStore {self._safe_url()}>"
