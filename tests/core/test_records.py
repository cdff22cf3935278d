"""The records store against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from plugboard.errors import ProviderError
from plugboard.providers.records import RecordsConfig, RecordsStore, SQLRecordsStore, UTCDateTime, utc
from plugboard.testing_servers import PostgresServer, free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"
        return
    # Looked up lazily: SQLite-only runs never start PostgreSQL.
    yield request.getfixturevalue("postgres_url")


def notes_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "test_notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(200), nullable=False),
    )


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SQLRecordsStore]:
    s = SQLRecordsStore(db_url)
    notes_table(s.metadata)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def test_is_a_records_store(store: SQLRecordsStore, db_url: str) -> None:
    assert isinstance(store, RecordsStore)
    assert store.dialect == db_url.split("+")[0]


async def test_start_creates_missing_tables(store: SQLRecordsStore) -> None:
    notes = store.metadata.tables["test_notes"]
    async with store.begin() as conn:
        await conn.execute(notes.insert(), [{"text": "a"}, {"text": "b"}])
    async with store.connect() as conn:
        rows = (await conn.execute(sa.select(notes.c.text).order_by(notes.c.id))).scalars().all()
    assert rows == ["a", "b"]


def test_utc_is_the_rule_the_column_stores_by() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert utc(dt.datetime(2026, 12, 7, 12, 0, tzinfo=plus_two)) == dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone.utc)
    assert utc(dt.datetime(2026, 12, 7, 12, 0, tzinfo=plus_two)).utcoffset() == dt.timedelta(0)
    assert utc(dt.datetime(2026, 12, 7, 12, 0)) == dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)  # naive: taken as UTC
    assert utc(None) is None


async def test_utc_datetime_keeps_the_instant(db_url: str) -> None:
    # SQLite drops a timestamp's offset: 12:00+02:00 must still read back as 10:00 UTC, and compare so.
    s = SQLRecordsStore(db_url)
    stamps = sa.Table("test_stamps", s.metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", UTCDateTime()))
    await s.start()
    try:
        plus_two = dt.timezone(dt.timedelta(hours=2))
        async with s.begin() as conn:
            await conn.execute(stamps.insert(), [
                {"id": 1, "at": dt.datetime(2026, 12, 7, 12, 0, 0, 250000, tzinfo=plus_two)},
                {"id": 2, "at": dt.datetime(2026, 12, 7, 11, 0)},  # naive: taken as UTC
                {"id": 3, "at": None},
            ])
        async with s.connect() as conn:
            rows = (await conn.execute(sa.select(stamps.c.at).order_by(stamps.c.id))).scalars().all()
            later = (await conn.execute(sa.select(stamps.c.id).where(stamps.c.at > dt.datetime(2026, 12, 7, 12, 30, tzinfo=plus_two)))).scalars().all()
        z = dt.timezone.utc
        assert rows == [dt.datetime(2026, 12, 7, 10, 0, 0, 250000, tzinfo=z), dt.datetime(2026, 12, 7, 11, 0, tzinfo=z), None]
        assert all(r is None or r.utcoffset() == dt.timedelta(0) for r in rows)
        assert later == [2]  # 11:00 UTC is after 10:30 UTC; 10:00 UTC is not
    finally:
        async with s.begin() as conn:
            await conn.run_sync(stamps.drop)
        await s.close()


async def test_start_twice_keeps_tables_and_rows(db_url: str) -> None:
    first = SQLRecordsStore(db_url)
    notes = notes_table(first.metadata)
    await first.start()
    async with first.begin() as conn:
        await conn.execute(notes.insert(), {"text": "kept"})
    await first.start()  # idempotent on the same store
    await first.close()

    # A new process: same tables declared again, plus a new one.
    second = SQLRecordsStore(db_url)
    notes2 = notes_table(second.metadata)
    extra = sa.Table("test_extra", second.metadata, sa.Column("id", sa.Integer, primary_key=True))
    await second.start()
    try:
        async with second.connect() as conn:
            assert (await conn.execute(sa.select(notes2.c.text))).scalars().all() == ["kept"]
            assert (await conn.execute(sa.select(sa.func.count()).select_from(extra))).scalar() == 0
    finally:
        await second.close()


async def test_transaction_rolls_back_on_error(store: SQLRecordsStore) -> None:
    notes = store.metadata.tables["test_notes"]
    with pytest.raises(RuntimeError, match="boom"):
        async with store.begin() as conn:
            await conn.execute(notes.insert(), {"text": "lost"})
            raise RuntimeError("boom")
    async with store.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(notes))).scalar() == 0


async def test_check_passes(store: SQLRecordsStore) -> None:
    await store.check()


async def test_close_twice(store: SQLRecordsStore) -> None:
    await store.close()
    await store.close()


async def test_sqlite_foreign_keys_enforced(tmp_path: Path) -> None:
    s = SQLRecordsStore(f"sqlite+aiosqlite:///{tmp_path / 'fk.db'}")
    sa.Table("parent", s.metadata, sa.Column("id", sa.Integer, primary_key=True))
    child = sa.Table(
        "child",
        s.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id"), nullable=False),
    )
    await s.start()
    try:
        with pytest.raises(sa.exc.IntegrityError):
            async with s.begin() as conn:
                await conn.execute(child.insert(), {"parent_id": 42})
        async with s.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        await s.close()


async def test_sqlite_relative_path_resolved_under_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv" / "var"
    s = SQLRecordsStore(RecordsConfig().url, data_dir=data_dir)
    assert s.url.database == str(data_dir / "plugboard.db")
    await s.start()
    try:
        await s.check()
    finally:
        await s.close()
    assert (data_dir / "plugboard.db").is_file()


async def test_sqlite_absolute_path_ignores_data_dir(tmp_path: Path) -> None:
    s = SQLRecordsStore(f"sqlite+aiosqlite:///{tmp_path / 'abs.db'}", data_dir=tmp_path / "elsewhere")
    assert s.url.database == str(tmp_path / "abs.db")
    await s.close()


async def test_sqlite_memory_is_shared_across_connections(tmp_path: Path) -> None:
    s = SQLRecordsStore("sqlite+aiosqlite:///:memory:", data_dir=tmp_path)
    notes = notes_table(s.metadata)
    await s.start()
    try:
        async with s.begin() as conn:
            await conn.execute(notes.insert(), {"text": "shared"})
        async with s.connect() as conn:
            assert (await conn.execute(sa.select(notes.c.text))).scalars().all() == ["shared"]
        await s.check()
    finally:
        await s.close()
    assert list(tmp_path.iterdir()) == []


async def test_unreachable_postgres_fails_fast_with_masked_password() -> None:
    port = free_port()  # closed: nothing listens there
    s = SQLRecordsStore(f"postgresql+asyncpg://user:s3cret@127.0.0.1:{port}/db")
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await s.start()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"records: cannot connect to postgresql+asyncpg://user:***@127.0.0.1:{port}/db: ")
    assert "s3cret" not in message
    with pytest.raises(ProviderError, match=r"user:\*\*\*@") as info:
        await s.check()
    assert "s3cret" not in str(info.value)
    await s.close()


async def test_silent_postgres_times_out() -> None:
    # Accepts TCP connections (the kernel's backlog) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        s = SQLRecordsStore(f"postgresql+asyncpg://user:pw@127.0.0.1:{port}/db", connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ProviderError, match="cannot connect"):
            await s.start()
        assert time.monotonic() - started < 3
        await s.close()


async def test_concurrent_transactions(store: SQLRecordsStore) -> None:
    notes = store.metadata.tables["test_notes"]

    async def insert(i: int) -> None:
        async with store.begin() as conn:
            await conn.execute(notes.insert(), {"text": f"n{i}"})

    await asyncio.gather(*(insert(i) for i in range(10)))
    async with store.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(notes))).scalar() == 10


def test_missing_postgres_binaries_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        PostgresServer(bindir=tmp_path).start()


async def test_sqlite_memory_users_take_turns(tmp_path: Path) -> None:
    # One shared connection: interleaved transactions would wait for each other forever.
    s = SQLRecordsStore("sqlite+aiosqlite:///:memory:", data_dir=tmp_path)
    notes = notes_table(s.metadata)
    await s.start()
    try:

        async def write(i: int) -> None:
            async with s.begin() as conn:
                await conn.execute(notes.insert(), {"text": f"n{i}"})
                await asyncio.sleep(0)  # let the others try to begin meanwhile
                await conn.execute(notes.insert(), {"text": f"m{i}"})

        async def read() -> int:
            async with s.connect() as conn:
                return len((await conn.execute(sa.select(notes.c.text))).scalars().all())

        await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(10)), *(read() for _ in range(5))), 10)
        assert await read() == 20
    finally:
        await s.close()
