"""Publishing job changes: topics ``jobs`` (every job) and ``jobs.<id>`` (one job).

The payload is ``Job.to_dict()``. Without a pubsub provider (the realtime
plugin is off) nothing is published; a failed publish is logged, never
raised: the record is the truth, the event only a notification.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from plugboard import keys
from plugboard.plugins.jobs.model import Job

logger = logging.getLogger("plugboard.jobs")

ALL_TOPIC = "jobs"


def job_topic(job_id: str) -> str:
    return f"{ALL_TOPIC}.{job_id}"


async def publish(app: Mapping[Any, Any], job: Job) -> None:
    pubsub = app.get(keys.PUBSUB)
    if pubsub is None:
        return
    payload = job.to_dict()
    results = await asyncio.gather(
        pubsub.publish(ALL_TOPIC, payload), pubsub.publish(job_topic(job.id), payload), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            logger.warning("jobs: change of job %s not published: %s", job.id, result)
            break
