"""The jobs plugin's GraphQL surface: resolvers and the ``jobUpdated`` subscription (SDL: ``schema.graphql``).

Admins (``plugboard.graphql.context.is_admin``) see and act on every job;
the owner of a job (the identity that enqueued it) may read ``job(id)`` and
subscribe to ``jobUpdated(id)``. Everyone else gets FORBIDDEN. Jobs API
errors become GraphQL errors with the error's ``code``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator, Mapping

from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.context import is_admin
from plugboard.plugins.jobs.errors import JobsError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import Job, JobStatus


def _time(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def job_fields(job: Job) -> dict[str, Any]:
    """A Job as the GraphQL ``Job`` type's fields."""
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status.value,
        "progress": job.progress,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "error": job.error,
        "result": job.result,
        "args": job.args,
        "createdAt": _time(job.created_at),
        "startedAt": _time(job.started_at),
        "completedAt": _time(job.completed_at),
    }


def identity_of(context: Any) -> str | None:
    """``context.identity`` as a string (an id, or an object/mapping with ``id``)."""
    identity = getattr(context, "identity", None)
    if identity is None or isinstance(identity, bool):
        return None
    if isinstance(identity, Mapping):
        identity = identity.get("id")
    elif not isinstance(identity, (str, int)):
        identity = getattr(identity, "id", None)
    return None if identity is None else str(identity)


def _jobs(context: Any) -> Any:
    jobs = context.app.get(JOBS)
    if jobs is None:
        raise GraphQLError("the jobs plugin is not running", "SERVICE_UNAVAILABLE")
    return jobs


def _require_admin(context: Any) -> None:
    if not is_admin(context):
        raise GraphQLError("only admins may do this", "FORBIDDEN")


def _coded(error: JobsError) -> GraphQLError:
    return GraphQLError(str(error), error.code)


async def _readable(context: Any, id: Any) -> Job | None:
    """The job if the caller may see it; None when it does not exist; FORBIDDEN otherwise."""
    job = await _jobs(context).get(str(id))
    if job is None:
        if not is_admin(context) and identity_of(context) is None:
            raise GraphQLError("only admins or a job's owner may read it", "FORBIDDEN")
        return None
    if is_admin(context) or (job.owner is not None and job.owner == identity_of(context)):
        return job
    raise GraphQLError("only admins or a job's owner may read it", "FORBIDDEN")


async def resolve_jobs(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    first = args.get("first")
    try:
        page = await _jobs(context).list(
            status=JobStatus(args["status"]) if args.get("status") else None,
            type=args.get("type"),
            first=20 if first is None else first,
            after=args.get("after"),
        )
    except JobsError as e:
        raise _coded(e) from None
    return {
        "edges": [{"cursor": job.id, "node": job_fields(job)} for job in page.jobs],
        "pageInfo": {"endCursor": page.end_cursor, "hasNextPage": page.has_next_page},
        "totalCount": page.total_count,
    }


async def resolve_job(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any] | None:
    job = await _readable(context, args["id"])
    return None if job is None else job_fields(job)


async def resolve_job_counts(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    _require_admin(context)
    counts = await _jobs(context).counts()
    return [{"status": status.value, "count": counts.get(status, 0)} for status in JobStatus]


async def resolve_job_types(parent: Any, args: dict, context: Any, info: Any) -> list[str]:
    return _jobs(context).types()


async def resolve_enqueue(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    try:
        job = await _jobs(context).enqueue(args["type"], args.get("args"), owner=identity_of(context))
    except JobsError as e:
        raise _coded(e) from None
    return job_fields(job)


async def resolve_retry(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    try:
        return job_fields(await _jobs(context).retry(str(args["id"])))
    except JobsError as e:
        raise _coded(e) from None


async def resolve_cancel(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    try:
        return job_fields(await _jobs(context).cancel(str(args["id"])))
    except JobsError as e:
        raise _coded(e) from None


async def subscribe_job_updated(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    jobs = _jobs(context)
    job_id = str(args["id"])
    if await _readable(context, job_id) is None:
        raise GraphQLError(f"no job with id {job_id!r}", "NOT_FOUND")
    try:
        watching = jobs.watch(job_id)
        changes = await watching.__aenter__()
    except JobsError as e:
        raise GraphQLError(str(e), "SERVICE_UNAVAILABLE") from None
    try:
        # Read after subscribing: no change can fall between the two.
        current = await jobs.get(job_id)
        if current is not None:
            yield {"jobUpdated": job_fields(current)}
        async for job in changes:
            yield {"jobUpdated": job_fields(job)}
    finally:
        await watching.__aexit__(None, None, None)


RESOLVERS = {
    "Query.jobs": resolve_jobs,
    "Query.job": resolve_job,
    "Query.jobCounts": resolve_job_counts,
    "Query.jobTypes": resolve_job_types,
    "Mutation.enqueueJob": resolve_enqueue,
    "Mutation.retryJob": resolve_retry,
    "Mutation.cancelJob": resolve_cancel,
}
SUBSCRIPTIONS = {"Subscription.jobUpdated": subscribe_job_updated}
