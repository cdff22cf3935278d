"""The operation guards, assembled: execution timeout, concurrency cap, hidden suggestions.

Each guard is a step in its own module (:mod:`.timeout`,
:mod:`.concurrency`, :mod:`.suggestions`); this module keeps their per-app
counters (``app[GUARDS]``, read by ``/metrics``) and puts the steps in
order: suggestions outermost (they clean whatever the others answer), then
the concurrency slot (held for the whole run, timed-out runs included), then
the timeout around everything that executes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugboard import keys
from plugboard.plugins.protection.concurrency import ConcurrencyLimiter, concurrency_step
from plugboard.plugins.protection.suggestions import hidden, suggestions_step
from plugboard.plugins.protection.timeout import timeout_step


class Guards:
    """One app's guard counters."""

    def __init__(self, concurrency_max: int) -> None:
        self.concurrency = ConcurrencyLimiter(concurrency_max)
        self.timeouts = 0

    def timed_out(self) -> None:
        self.timeouts += 1


GUARDS: web.AppKey[Guards] = web.AppKey("plugboard.protection.guards", Guards)


def guard_steps(app: web.Application, config: Any) -> list[Any]:
    """The guard steps the settings turn on, outermost first."""
    from plugboard.plugins.protection.limiter import LIMITER

    guards = app[GUARDS] = Guards(config.concurrency.max)
    steps: list[Any] = []
    mode = hidden(config.graphql.suggestions, app[keys.CORE_CONFIG].graphql.introspection)
    if mode is not False:
        steps.append(suggestions_step(mode))
    if config.concurrency.max:
        steps.append(concurrency_step(guards.concurrency, app[LIMITER].identity_key))
    if config.graphql.timeout:
        steps.append(timeout_step(config.graphql.timeout, guards.timed_out))
    return steps
