"""Enqueue N no-op jobs one after the other, timing each call; print one JSON line.

    python producer.py plugboard <root> <n>     # app[JOBS].enqueue("noop") in a started app
    python producer.py baseline - <n>          # noop.kiq() on the taskiq-redis broker

The JSON: ``t0`` (Unix time of the first enqueue), ``t1`` (after the last),
``cpu`` (the producer's CPU seconds over the calls), ``latencies``
(seconds, one per call, in order).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path


async def plugboard(root: str, n: int) -> dict:
    from plugboard.app import create_app
    from plugboard.commands import CommandContext
    from plugboard.plugins.jobs.keys import JOBS
    from plugboard.settings import Settings

    app = create_app(Settings.load(Path(root)))
    async with CommandContext.running(app):
        jobs = app[JOBS]
        await jobs.enqueue("noop")  # warm-up (connections, scripts): not counted, not a job the worker times
        return await timed(n, lambda: jobs.enqueue("noop"))


async def baseline(n: int) -> dict:
    from baseline_app import broker, noop

    await broker.startup()
    try:
        await noop.kiq()
        return await timed(n, noop.kiq)
    finally:
        await broker.shutdown()


async def timed(n: int, call) -> dict:
    latencies = []
    clock = time.perf_counter
    t0 = time.time()
    cpu0 = time.process_time()
    for _ in range(n):
        start = clock()
        await call()
        latencies.append(clock() - start)
    return {"t0": t0, "t1": time.time(), "cpu": time.process_time() - cpu0, "latencies": latencies}


def main() -> None:
    side, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    out = asyncio.run(plugboard(root, n) if side == "plugboard" else baseline(n))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
