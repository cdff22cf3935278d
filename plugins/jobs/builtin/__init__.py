"""The built-in job types: ``send-email``, ``process-image``, ``export-data``, ``generate-report``, ``cleanup``.

Each is switched by ``jobs.jobs.*`` (``email``, ``file_processing``,
``data_export``, ``reports``, ``cleanup``) and follows the task contract of
:mod:`plugboard.tasks`. Their settings are ``jobs.files``, ``jobs.email``,
``jobs.images``, ``jobs.export``, ``jobs.reports`` and ``jobs.cleanup``
(:mod:`.config`); the file storage and the mailer they use are the core's
named services (:mod:`.services`).
"""

from __future__ import annotations

import typing
from typing import Any, Callable

from plugboard.plugins.jobs.builtin import cleanup, export, images, report, send_email
from plugboard.plugins.jobs.builtin.config import of
from plugboard.plugins.jobs.builtin.services import Services

#: Task name -> (``jobs.jobs`` switch, module with ``make_task``).
TYPES = {
    "send-email": ("email", send_email),
    "process-image": ("file_processing", images),
    "export-data": ("data_export", export),
    "generate-report": ("reports", report),
    "cleanup": ("cleanup", cleanup),
}


def builtin_tasks(config: Any) -> dict[str, Callable[..., Any]]:
    """The switched-on built-in job types for one app, by task name.

    :param config: the app's ``JobsConfig`` (None: every type, default settings).
    """
    settings = of(config)
    switches = getattr(config, "jobs", None)
    services = Services(settings)
    tasks: dict[str, Callable[..., Any]] = {}
    for name, (switch, module) in TYPES.items():
        if switches is not None and not getattr(switches, switch):
            continue
        tasks[name] = module.make_task(settings, services)
    names = tuple(sorted(settings.export.datasets))
    for name in ("export-data", "generate-report"):
        if name in tasks and names:
            # A Literal of the registered names, so enqueue can refuse an
            # unknown dataset (the argument check reads annotations).
            tasks[name].__annotations__["dataset"] = typing.Literal[names]
    return tasks


__all__ = ["TYPES", "builtin_tasks"]
