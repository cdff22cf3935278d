"""Cancel tasks and wait until they are really done.

redis-py (8.1) can swallow a cancellation that arrives while a command is in
flight: the task goes on, and a plain ``task.cancel(); await task`` at
shutdown may wait forever. Cancelling again until the task ends makes
shutdown finish whatever the task was doing.
"""

from __future__ import annotations

import asyncio
from typing import Iterable


async def cancel_until_done(tasks: Iterable[asyncio.Task], *, every: float = 0.5) -> None:
    """Cancel ``tasks``, again every ``every`` seconds for those still running."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=every)
