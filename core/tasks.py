"""The task contract: what a ``plugboard_tasks`` function may expect and declare.

A task is ``async def task(**args)`` whose arguments are JSON values (the
job's arguments, checked against the signature and its simple annotations
when the job is enqueued; ``**extra: Unpack[SomeTypedDict]`` names extra
keywords, such as ones that are Python keywords).
A task that declares a parameter named ``job`` also receives a
:class:`TaskContext` to report progress through. Whichever plugin runs
tasks (the jobs plugin, with its taskiq brokers) honours this contract;
plugins that contribute tasks import only this module.

    from plugboard.tasks import PermanentError, TaskContext, retry

    @retry(attempts=5, backoff=2.0, permanent=(KeyError,))
    async def process_image(job: TaskContext, key: str, width: int) -> dict:
        await job.progress(50)
        ...
        return {"key": out}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

import attrs

if TYPE_CHECKING:
    from aiohttp import web

F = TypeVar("F", bound=Callable[..., Any])

#: The parameter name through which a task receives its TaskContext.
CONTEXT_PARAMETER = "job"


class PermanentError(Exception):
    """Raise from a task to fail its job at once: retrying cannot help."""


class TaskContext(Protocol):
    """The running job, as a task sees it."""

    #: The job's id (as in the jobs API and GraphQL).
    id: str
    #: The task name the job runs.
    type: str
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    #: The application the task runs in (server or worker), started.
    app: "web.Application"

    async def progress(self, percent: float) -> None:
        """Report progress, 0 to 100; watchers see it live.

        Raises the runner's cancellation error when the job was cancelled
        meanwhile, so a long task stops at its next report.
        """


@attrs.define(frozen=True)
class RetryPolicy:
    """A task's own retry strategy; None fields fall back to the runner's settings."""

    #: Attempts in all, the first included.
    attempts: int | None = None
    #: Seconds before the first retry; doubles each retry (with jitter).
    backoff: float | None = None
    #: Upper bound on the delay between attempts, in seconds.
    max_backoff: float | None = None
    #: Exception types that fail the job at once (PermanentError always does).
    permanent: tuple[type[BaseException], ...] = ()


def retry(
    *,
    attempts: int | None = None,
    backoff: float | None = None,
    max_backoff: float | None = None,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[F], F]:
    """Declare a task's retry strategy (see :class:`RetryPolicy`)."""
    policy = RetryPolicy(attempts=attempts, backoff=backoff, max_backoff=max_backoff, permanent=tuple(permanent))

    def decorate(fn: F) -> F:
        fn.__plugboard_retry__ = policy  # type: ignore[attr-defined]
        return fn

    return decorate


def retry_policy(fn: Callable[..., Any]) -> RetryPolicy:
    """The policy ``@retry`` declared on ``fn``, or the all-defaults one."""
    return getattr(fn, "__plugboard_retry__", None) or RetryPolicy()


__all__ = ["CONTEXT_PARAMETER", "PermanentError", "RetryPolicy", "TaskContext", "retry", "retry_policy"]
