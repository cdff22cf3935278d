"""The jobs plugin's app keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from plugboard.plugins.jobs.api import Jobs
    from plugboard.plugins.jobs.builtin.send_email import SendGuard

#: The jobs API (enqueue, get, list, counts, retry, cancel, watch), while the app runs.
JOBS: web.AppKey["Jobs"] = web.AppKey("plugboard.jobs")

#: Which process the app runs in: unset for ``plugboard serve``, ``"worker"`` or
#: ``"scheduler"`` when those commands build it (set before start-up).
ROLE: web.AppKey[str] = web.AppKey("plugboard.jobs.role")

#: Set by a plugin (the email plugin) that keeps ``send-email`` jobs carrying an
#: ``idempotency_key`` from sending a message twice; see ``builtin.send_email.SendGuard``.
SEND_GUARD: web.AppKey["SendGuard"] = web.AppKey("plugboard.jobs.send_guard")
