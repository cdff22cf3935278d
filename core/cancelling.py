"""Cancelling a task and waiting until it has really ended.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives
just as the awaited write completes, and redis-py (8.x, with its default
5 s ``socket_timeout``) wraps every command's write in it: measured here,
most cancellations of a task looping on ``PING`` were lost, and the task
carried on. A plain ``task.cancel(); await task`` may then wait forever (a
sweeper that goes back to sleep, a subscription that waits for its next
event). Python 3.12's ``wait_for`` does not have the race; the helper costs
nothing there.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

__all__ = ["cancel_until_done", "keep_cancelling"]

#: Seconds between cancellations of a task that is still running.
AGAIN_EVERY = 0.1


async def cancel_until_done(
    tasks: Iterable["asyncio.Future[object]"], *, every: float = AGAIN_EVERY, cancel: bool = True
) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again
    every ``every`` seconds those still running (a task's clean-up that
    awaits longer than that is cancelled too).

    With ``cancel=False`` it only waits (for clean-up work that must finish).

    A cancellation of the caller meanwhile is held back until the tasks are
    gone, then raised: clean-up is never cut short (a connection left out of
    its pool, an orphaned reader). The tasks' own errors are retrieved, not
    raised: the caller is discarding them.
    """
    tasks = list(tasks)
    if cancel:
        # On a timer, not between waits below: a caller that is itself
        # cancelled again and again (a nested shutdown) must not starve it.
        for task in tasks:
            keep_cancelling(task, every=every)
    pending = {task for task in tasks if not task.done()}
    interrupted = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True
    for task in tasks:
        if not task.cancelled():
            # Retrieved so that asyncio does not log "exception was never retrieved".
            task.exception()
    if interrupted:
        raise asyncio.CancelledError


def keep_cancelling(task: "asyncio.Future[object]", *, every: float = AGAIN_EVERY) -> None:
    """Cancel ``task`` now, and again every ``every`` seconds while it runs; does not wait.

    For a stop that must not block its caller (a client completing one
    operation) but must not be lost either: a subscription whose cancellation
    was swallowed would go on sending.
    """
    if task.done():
        return
    task.cancel()
    loop = task.get_loop()

    def again() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(every, again)

    loop.call_later(every, again)
