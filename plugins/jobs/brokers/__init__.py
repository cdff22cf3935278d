"""The jobs plugin's brokers (the core's ``broker`` kind, :mod:`plugboard.providers.broker`).

``memory`` (taskiq's InMemoryBroker: jobs run in the server) and ``redis``
(a Redis stream with a consumer group and acknowledgement: ``plugboard
worker`` processes consume it). The message of a job carries only its id;
the record holds the arguments.
"""

from __future__ import annotations

from typing import Any

import attrs
from taskiq.message import TaskiqMessage

from plugboard.providers.registry import ProviderSpec

#: The runner acknowledges through ``settle``, never taskiq's Receiver.
MESSAGE_LABELS = {"ack_type": "manual"}


@attrs.define(frozen=True, kw_only=True)
class BrokerOptions:
    """What every broker is built with (from the ``jobs`` settings)."""

    #: Redis stream name (``jobs.queue``).
    queue: str = "plugboard:jobs"
    #: The Redis URL (``jobs.redis``, else the core ``redis.url``); None without Redis.
    redis_url: str | None = None
    #: Jobs at once (in-process brokers; workers take ``--concurrency``).
    concurrency: int = 10
    #: Seconds before a delivered but silent job goes to another consumer.
    idle_timeout: float = 60.0
    #: Seconds running in-process jobs may take to finish at shutdown.
    shutdown_grace: float = 30.0


def job_message(task: str, job_id: str) -> TaskiqMessage:
    """The taskiq message of one job delivery."""
    return TaskiqMessage(task_id=job_id, task_name=task, labels=dict(MESSAGE_LABELS), args=[], kwargs={"job_id": job_id})


def encode(broker: Any, task: str, job_id: str) -> Any:
    """The ``BrokerMessage`` for ``broker`` (its own formatter and serializer)."""
    return broker.formatter.dumps(job_message(task, job_id))


PROVIDER_SPECS = (
    ProviderSpec(
        kind="broker",
        name="memory",
        factory="plugboard.plugins.jobs.brokers.memory:MemoryBroker",
        config=BrokerOptions,
        requires="taskiq",
        description="taskiq InMemoryBroker: jobs run inside the server process",
    ),
    ProviderSpec(
        kind="broker",
        name="redis",
        factory="plugboard.plugins.jobs.brokers.redis:RedisBroker",
        config=BrokerOptions,
        requires="taskiq-redis",
        description="taskiq-redis stream broker with acknowledgement: plugboard worker processes run jobs",
    ),
)
