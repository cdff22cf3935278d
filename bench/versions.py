"""What a benchmark ran on: Python, the packages it depends on, and the Redis server.

Every benchmark prints this block before its figures, and bench/RESULTS.md
records it beside them, so that a figure that moves with a dependency shows
up as a version diff rather than as a mystery (issue 16). The block also says
whether the installed versions are the ones pinned in ``.ci/lock.txt`` (what
``.ci/run`` and the documented benchmark set-up install with ``-c``), and
lists every package that differs.

    python bench/versions.py [PACKAGE ...]     # the block alone
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / ".ci" / "lock.txt"

#: What every benchmark runs on (the runtime itself).
CORE = ("aiohttp", "tartiflette", "uvloop", "pluggy", "dynaconf", "attrs", "cattrs")


def locked() -> dict[str, str]:
    """``name -> version`` pinned in .ci/lock.txt (environment markers ignored: one line per name wins)."""
    pins: dict[str, str] = {}
    if not LOCK.exists():
        return pins
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if m:
            pins.setdefault(_norm(m[1]), m[2])
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def redis_server() -> str | None:
    if not shutil.which("redis-server"):
        return None
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"v=(\S+)", out)
    return m[1] if m else out.strip()


def report(packages: tuple[str, ...] | list[str] = (), *, redis: bool = False) -> str:
    """The versions block: one line of versions, one line on the lock."""
    names = list(dict.fromkeys([*CORE, *packages]))
    parts = [f"Python {platform.python_version()}"] + [f"{n} {installed(n)}" for n in names]
    if redis:
        parts.append(f"redis-server {redis_server() or 'not found'}")
    pins = locked()
    if not pins:
        lock_line = f"lock: {LOCK} not found"
    else:
        from importlib.metadata import distributions

        differ = []
        for dist in distributions():
            name = _norm(dist.metadata["Name"] or "")
            if name in pins and pins[name] != dist.version:
                differ.append(f"{name} {dist.version} (lock {pins[name]})")
        lock_line = (
            "lock: installed versions match .ci/lock.txt"
            if not differ
            else "lock: NOT the locked versions: " + ", ".join(sorted(differ))
        )
    return "versions: " + ", ".join(parts) + "\n" + lock_line


def print_report(packages: tuple[str, ...] | list[str] = (), *, redis: bool = False) -> None:
    print(report(packages, redis=redis), flush=True)


if __name__ == "__main__":
    print_report(sys.argv[1:], redis=True)
