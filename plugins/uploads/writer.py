"""Group commit of the file records that concurrent uploads write.

Each upload ends with one record insert. On SQLite every commit is a WAL
fsync, and writers take turns on one lock (a waiting writer sleeps in
SQLite's busy handler), so 200 uploads finishing together spent most of their
time queueing for 200 commits (bench/uploads_local.py). :class:`RecordWriter`
sends whatever inserts arrived while a transaction was in flight as the next
single transaction: an upload alone is written at once, as before; a burst
costs one commit per batch, not one per file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa


class RecordWriter:
    """``await writer.insert(row)``: returns once the row is committed (with the others of its batch)."""

    def __init__(self, records: Any, table: sa.Table) -> None:
        self.records = records
        self.table = table
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def insert(self, row: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (row, future)
        self._pending.append(entry)
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if entry in self._pending:
                self._pending.remove(entry)
            elif not future.done():
                # Its batch is being committed: wait for the outcome, so a
                # caller that cleans up after the cancellation (deletes the
                # record) does not run before the insert lands.
                await asyncio.wait([future])
            raise

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._write([row for row, _ in batch])
                except Exception as e:
                    if len(batch) == 1:
                        _settle(batch[0][1], e)
                        continue
                    # One bad row must not fail the others: each alone, each its own outcome.
                    for row, future in batch:
                        try:
                            await self._write([row])
                        except Exception as one:
                            _settle(future, one)
                        else:
                            _settle(future, None)
                else:
                    for _row, future in batch:
                        _settle(future, None)
        finally:
            self._flushing = None
            for _row, future in self._pending:  # only when the flush itself was cancelled (shutdown)
                _settle(future, asyncio.CancelledError())
            self._pending = []

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        async with self.records.begin() as conn:
            await conn.execute(self.table.insert(), rows)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
