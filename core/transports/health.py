"""``/healthz`` (the process answers) and ``/readyz`` (every dependency answers)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from plugboard import keys

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[keys.SHUTTING_DOWN]["value"]:
        return web.json_response({"status": "shutting down"}, status=503)
    checks: dict[str, object] = {}

    async def run(name: str, check) -> None:
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as e:  # any failure means "not ready"; the reason is reported
            checks[name] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    jobs = [run("records", app[keys.RECORDS].check)]
    redis = app.get(keys.REDIS)
    if redis is not None:
        jobs.append(run("redis", redis.ping))
    jobs += [run(name, fn) for name, fn in app[keys.READY_CHECKS].items()]
    await asyncio.gather(*jobs)
    for name, problem in (await app[keys.PROVIDERS].check_all()).items():
        checks[name] = problem or "ok"
    ok = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)
