"""Errors the jobs API raises; GraphQL resolvers turn them into coded GraphQL errors."""

from __future__ import annotations


class JobsError(Exception):
    """Base of every jobs API error. ``code`` is the GraphQL error code."""

    code = "BAD_USER_INPUT"


class UnknownTaskError(JobsError):
    """No task of that name is registered (or its job type is switched off)."""


class JobArgumentsError(JobsError):
    """The arguments do not fit the task's signature or are not JSON values."""


class JobNotFound(JobsError):
    code = "NOT_FOUND"


class JobStateError(JobsError):
    """The job's status does not allow the action (retrying a COMPLETED job)."""

    code = "CONFLICT"


class JobCancelled(Exception):
    """Raised inside a running task (from ``job.progress``) once its job was cancelled."""
