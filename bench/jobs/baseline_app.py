"""The baseline: plain taskiq-redis, a stream broker with acknowledgement and a
Redis result backend, and the same no-op task.

    taskiq worker baseline_app:broker --workers 1 --max-async-tasks 10

``BENCH_REDIS_URL`` names the Redis server.
"""

from __future__ import annotations

import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench:taskiq"
GROUP = "taskiq"

broker = RedisStreamBroker(URL, queue_name=QUEUE, consumer_group_name=GROUP).with_result_backend(RedisAsyncResultBackend(URL))


@broker.task(task_name="noop")
async def noop() -> None:
    return None
