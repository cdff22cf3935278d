"""The jobstore provider kind: where background job records live.

The jobs plugin selects one with ``jobs.store`` (``records``: the records
store's table; ``redis``: hashes with sorted-set indexes). A third-party
store declares ``ProviderSpec(kind="jobstore", name=..., factory=...,
config=plugboard.plugins.jobs.store.StoreOptions)`` and should pass the
jobs plugin's contract test (tests/plugins/jobs/test_store.py).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Protocol, runtime_checkable


@runtime_checkable
class JobStore(Protocol):
    """Job records: create, read, change under a status condition, list, count, purge.

    Implementer's manual:

    - Lifecycle: ``await start()`` (connect; the ``records`` store needs the
      app's records store started, the ``redis`` one the shared Redis client
      or its own URL), ``await close()``, ``await check()`` (one round trip,
      raises when the backend does not answer; used by ``/readyz``).
    - Jobs are the jobs plugin's ``Job`` records (``plugboard.plugins.jobs.model``);
      statuses its ``JobStatus``; listings return its ``JobPage``.
    - Ids are UUIDv7 strings: ordering by
      id is ordering by creation, which listings rely on (newest first,
      cursor = the last id of the page, exclusive).
    - :meth:`update` is the only way a record changes, and it is atomic: the
      status condition (``when``) is checked and the changes applied in one
      step, so a cancel and a worker finishing the job cannot both win.
      ``add_attempt`` increments ``attempts`` in the same step.
    - Values are JSON values (``args``, ``result``) or plain numbers and
      strings; ``None`` is stored and read back as ``None``.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def create(self, job: Any) -> None:
        """Store a new job (its id is new)."""

    async def get(self, id: str) -> Any:
        """The job, or None for an unknown id."""

    async def update(
        self,
        id: str,
        changes: Mapping[str, Any],
        *,
        when: Collection[Any] | None = None,
        add_attempt: bool = False,
    ) -> tuple[Any, bool]:
        """Apply ``changes`` (field -> value) if the job's status is in ``when`` (any if None).

        :returns: ``(job, applied)``: the job as it is afterwards (None for an
            unknown id) and whether the changes were applied.
        """

    async def list(self, *, status: Any | None = None, type: str | None = None, first: int = 20, after: str | None = None) -> Any:
        """Jobs newest first, filtered by status and/or type, ``first`` after the cursor ``after``."""

    async def counts(self) -> dict[Any, int]:
        """Jobs per status; every status present, zeros included."""

    async def counts_by_type(self, types: Collection[str]) -> dict[tuple[str, Any], int]:
        """Jobs per ``(type, status)`` for each of ``types``, zeros included.

        A store may add types it holds that ``types`` does not name (jobs of
        a task no longer registered); it must not leave any of ``types`` out.
        """

    async def delete_finished_before(self, ts: float) -> int:
        """Delete COMPLETED/FAILED/CANCELLED jobs whose ``completed_at`` is before ``ts``; how many."""
