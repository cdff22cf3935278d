"""The execution time limit of one operation (``protection.graphql.timeout``).

Queries and mutations running longer are cancelled (resolvers see
``CancelledError`` at their next ``await``) and answered with a result
``{"data": null, "errors": [{"extensions": {"code": "TIMEOUT"}}]}``: the
operation had started executing, so GraphQL over HTTP answers 200 (the
spec's rule for a null ``data``) and WebSocket sends ``next`` then
``complete``. A mutation cancelled half-way keeps whatever its resolvers had
already written: the limit bounds the work, it does not roll it back.

Subscriptions are not limited. Their stream is meant to stay open; and
neither setting up the source stream nor executing one event can be timed
apart from waiting for the next event from outside the engine (both happen in
the stream's ``__anext__``). A shared subscription's event is also executed
once for every subscriber, so cancelling it for one would cancel it for all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("plugboard.protection")

CODE = "TIMEOUT"


def timeout_step(seconds: float, on_timeout: Any) -> Any:
    """The step: ``call_next`` within ``seconds``, else a TIMEOUT result (``on_timeout()`` counts it)."""

    async def execution_timeout(op: Any, call_next: Any) -> Any:
        if op.operation_type == "subscription":
            return await call_next(op)
        try:
            async with asyncio.timeout(seconds):
                return await call_next(op)
        except TimeoutError:
            on_timeout()
            logger.warning("protection: %s %r cancelled after %ss (request %s)", op.operation_type, op.operation_name or "anonymous", seconds, op.context.request_id)
            return op.error_result(f"The operation took longer than {seconds:g}s and was cancelled", CODE, timeout=seconds)

    return execution_timeout
