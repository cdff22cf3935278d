"""Cron schedules: ``jobs.schedules`` in settings plus what plugins return from
``plugboard_schedules``, fired by enqueuing their task through the jobs API.

Cron expressions have five fields (minute hour day month weekday, matched by
pycron) and are read in UTC. Exactly one scheduler fires each tick even when
several run: before enqueuing, a scheduler takes a lock for (schedule, tick)
— Redis ``SET key NX EX`` with the redis broker, an in-process set with the
memory broker (one server runs the schedules). The tick source is a
parameter, so tests fire ticks without waiting for the minute.

A tick that passes while no scheduler runs is skipped, unless the schedule
says ``catch_up: true``: then the tick each such schedule last fired is kept
(:class:`RedisLastTicks`, ``<queue>:cron:last:<schedule>``, with the redis
broker; else the newest job of the schedule's task in the job records), and
a starting scheduler fires the latest tick missed since then, once (the
tick lock still decides which scheduler), however many were missed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Protocol

import attrs
import pycron

from plugboard.errors import PlugboardError

logger = logging.getLogger("plugboard.jobs.scheduler")

#: Built-in job types a default schedule may name while switched off (skipped, not an error).
BUILTIN_TYPES = frozenset({"send-email", "process-image", "export-data", "generate-report", "cleanup"})

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_PART = re.compile(r"^(\*|\d+(?:-\d+)?|[a-z]{3}(?:-[a-z]{3})?)(?:/(\d+))?$", re.IGNORECASE)


@attrs.define(frozen=True)
class Schedule:
    task: str
    cron: str
    args: dict[str, Any] = attrs.field(factory=dict)
    #: ``settings`` or the plugin that declared it.
    origin: str = "settings"
    #: Fire the latest tick missed while no scheduler ran, once, at start.
    catch_up: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}|{self.cron}|{self.origin}"


def cron_problem(expression: Any) -> str | None:
    """Why ``expression`` is not a five-field cron expression, or None."""
    if not isinstance(expression, str):
        return "expected a cron expression string such as '0 3 * * *'"
    fields = expression.split()
    if len(fields) != 5:
        return "expected five fields: minute hour day-of-month month day-of-week"
    for text, (low, high) in zip(fields, _RANGES):
        for part in text.split(","):
            match = _PART.match(part)
            if match is None:
                return f"{part!r} is not a cron field value"
            numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
            if any(not low <= n <= high for n in numbers):
                return f"{part!r} is out of range {low}-{high}"
            if match.group(2) is not None and int(match.group(2)) == 0:
                return f"{part!r}: a step must be positive"
    try:
        pycron.is_now(expression, dt.datetime(2024, 1, 1))
    except Exception as e:  # noqa: BLE001 - pycron's own complaint, whatever its type
        return f"not understood: {e}"
    return None


def collect_schedules(config_schedules: Iterable[Any], plugin_schedules: Iterable[Mapping[str, Any]], tasks: Iterable[str]) -> list[Schedule]:
    """Every schedule, checked; raises PlugboardError naming each bad one."""
    known = set(tasks)
    out: list[Schedule] = []
    problems: list[str] = []
    entries = [
        (f"jobs.schedules[{i}]", "settings", s.task, s.cron, s.args, getattr(s, "catch_up", False))
        for i, s in enumerate(config_schedules)
    ]
    for s in plugin_schedules:
        origin = f"plugin {s.get('plugin')!r}"
        entries.append(
            (f"schedule of {origin}", str(s.get("plugin")), s.get("task"), s.get("cron"), s.get("args") or {}, bool(s.get("catch_up", False)))
        )
    for where, origin, task, cron, args, catch_up in entries:
        problem = cron_problem(cron)
        if problem:
            problems.append(f"{where}: cron {cron!r}: {problem}")
            continue
        if task not in known:
            if task in BUILTIN_TYPES and origin == "settings":
                logger.info("jobs: schedule of %r skipped: that job type is switched off", task)
                continue
            problems.append(f"{where}: unknown task {task!r}; registered tasks: {', '.join(sorted(known)) or 'none'}")
            continue
        if not isinstance(args, Mapping):
            problems.append(f"{where}: args must be a mapping")
            continue
        out.append(Schedule(task, cron, dict(args), origin, catch_up))
    if problems:
        raise PlugboardError("jobs: bad schedules:\n" + "\n".join(f"  - {p}" for p in problems))
    return out


class TickLock(Protocol):
    async def acquire(self, schedule: Schedule, tick: dt.datetime) -> bool:
        """True for the one caller that fires ``schedule`` at ``tick``."""


class MemoryTickLock:
    """One process: remembers recent (schedule, tick) pairs."""

    def __init__(self) -> None:
        self._taken: dict[tuple[str, float], None] = {}

    async def acquire(self, schedule: Schedule, tick: dt.datetime) -> bool:
        key = (schedule.key, tick.timestamp())
        if key in self._taken:
            return False
        self._taken[key] = None
        while len(self._taken) > 10_000:
            del self._taken[next(iter(self._taken))]
        return True


class RedisTickLock:
    """Several schedulers on one Redis: ``SET <prefix>:tick:<schedule>:<tick> NX EX``."""

    def __init__(self, client: Any, prefix: str, ttl: int = 3600) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    async def acquire(self, schedule: Schedule, tick: dt.datetime) -> bool:
        # Milliseconds: sub-second ticks (``plugboard scheduler --tick-seconds 0.5``) get keys of their own.
        key = f"{self.prefix}:tick:{schedule.key}:{int(tick.timestamp() * 1000)}"
        return bool(await self.client.set(key, b"1", nx=True, ex=self.ttl))


class LastTicks(Protocol):
    async def get(self, schedule: Schedule) -> float | None:
        """When ``schedule`` last fired (Unix seconds), or None if unknown."""

    async def set(self, schedule: Schedule, ts: float) -> None:
        """Remember that ``schedule`` fired at ``ts``."""


class RedisLastTicks:
    """``<prefix>:cron:last:<schedule>`` holds the tick each catch-up schedule last fired."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, schedule: Schedule) -> str:
        return f"{self.prefix}:cron:last:{schedule.key}"

    async def get(self, schedule: Schedule) -> float | None:
        value = await self.client.get(self._key(schedule))
        return None if value is None else float(value)

    async def set(self, schedule: Schedule, ts: float) -> None:
        # Only forward: a late scheduler never moves the mark back.
        await self.client.eval(
            "local v = redis.call('GET', KEYS[1]) if not v or tonumber(v) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end",
            1,
            self._key(schedule),
            repr(ts),
        )


class JobRecordLastTicks:
    """Without Redis: the newest job of the schedule's task in the job records
    (a job enqueued by hand counts as a firing too)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def get(self, schedule: Schedule) -> float | None:
        page = await self.store.list(type=schedule.task, first=1)
        return page.jobs[0].created_at if page.jobs else None

    async def set(self, schedule: Schedule, ts: float) -> None:
        return None  # the job's record is the mark


#: How far back a catch-up looks for a missed tick.
CATCH_UP_WINDOW = 35 * 86400


def latest_tick(cron: str, after: float, until: float) -> dt.datetime | None:
    """The latest minute in (``after``, ``until``] that ``cron`` matches (UTC), looking back at most :data:`CATCH_UP_WINDOW`."""
    minute = dt.datetime.fromtimestamp(until // 60 * 60, dt.timezone.utc)
    floor = max(after, until - CATCH_UP_WINDOW)
    while minute.timestamp() > floor:
        if pycron.is_now(cron, minute.replace(tzinfo=None)):
            return minute
        minute -= dt.timedelta(minutes=1)
    return None


async def clock_ticks(period: float = 60.0, clock: Callable[[], float] = time.time) -> AsyncIterator[dt.datetime]:
    """Each boundary of ``period`` seconds of the wall clock (every minute by default), as UTC datetimes."""
    while True:
        now = clock()
        boundary = (int(now // period) + 1) * period
        await asyncio.sleep(boundary - now)
        yield dt.datetime.fromtimestamp(boundary, dt.timezone.utc)


class Scheduler:
    """Fires due schedules on each tick through ``enqueue(task, args)``."""

    def __init__(
        self,
        schedules: list[Schedule],
        enqueue: Callable[..., Any],
        lock: TickLock,
        last: LastTicks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schedules = schedules
        self.enqueue = enqueue
        self.lock = lock
        self.last = last
        self.clock = clock

    async def catch_up(self) -> list[Any]:
        """For each ``catch_up`` schedule, fire the latest tick missed since it last fired, once."""
        fired = []
        if self.last is None:
            return fired
        now = self.clock()
        for schedule in self.schedules:
            if not schedule.catch_up:
                continue
            try:
                last = await self.last.get(schedule)
                if last is None:
                    # Never fired: nothing was missed, but the next outage will be seen.
                    await self.last.set(schedule, now)
                    continue
                tick = latest_tick(schedule.cron, last, now)
                if tick is None or not await self.lock.acquire(schedule, tick):
                    continue
                logger.info("jobs: schedule %s (%s) catches up its tick of %s", schedule.task, schedule.cron, tick.isoformat())
                fired.append(await self.enqueue(schedule.task, schedule.args))
                await self.last.set(schedule, tick.timestamp())
            except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                logger.exception("jobs: schedule %s (%s) could not catch up", schedule.task, schedule.cron)
        return fired

    async def fire(self, tick: dt.datetime) -> list[Any]:
        """Enqueue every schedule due at ``tick`` that this scheduler wins the lock for."""
        minute = tick.astimezone(dt.timezone.utc).replace(second=0, microsecond=0, tzinfo=None)
        fired = []
        for schedule in self.schedules:
            if not pycron.is_now(schedule.cron, minute):
                continue
            try:
                if not await self.lock.acquire(schedule, tick):
                    continue
                fired.append(await self.enqueue(schedule.task, schedule.args))
                if schedule.catch_up and self.last is not None:
                    await self.last.set(schedule, tick.timestamp())
            except Exception:  # noqa: BLE001 - one bad tick must not stop the schedules
                logger.exception("jobs: schedule %s (%s) failed at %s", schedule.task, schedule.cron, tick.isoformat())
        return fired

    async def run(self, ticks: AsyncIterator[dt.datetime]) -> None:
        await self.catch_up()
        async for tick in ticks:
            await self.fire(tick)
