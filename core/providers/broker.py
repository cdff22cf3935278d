"""The broker provider kind: how background jobs travel from ``enqueue`` to the code that runs them.

The jobs plugin selects one with ``jobs.broker`` (``memory``: jobs run in
the server; ``redis``: ``plugboard worker`` processes consume a Redis
stream). A third-party broker declares ``ProviderSpec(kind="broker",
name=..., factory=..., config=plugboard.plugins.jobs.brokers.BrokerOptions)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Broker(Protocol):
    """A taskiq ``AsyncBroker`` with a small job-level interface on top.

    The implementer's manual: the jobs runner registers one taskiq task per
    plugin task on the broker, so the runner and the API never depend on
    which broker runs. A job's message carries only its id (``kwargs =
    {"job_id": ...}``, taskiq ``task_id`` = the job id); the job record
    holds the arguments.

    - ``in_process``: True when jobs run in the process that enqueues them
      (``memory``); False when ``plugboard worker`` processes consume them.
    - Lifecycle: ``await start()``, ``await close()`` (running in-process
      jobs get ``jobs.shutdown_grace``), ``await check()`` (``/readyz``).
    """

    in_process: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def send(self, task: str, job_id: str) -> None:
        """Deliver the job's message now."""

    async def send_later(self, task: str, job_id: str, at: float) -> None:
        """Deliver it at Unix time ``at`` (a retry's backoff).

        Must survive the process dying meanwhile when ``in_process`` is False.
        """

    async def settle(self, job_id: str) -> None:
        """The job's delivery is done (final, or handed to ``send_later``): acknowledge it.

        Until then an acknowledging broker redelivers the message if its
        consumer dies.
        """
