"""Job ids: UUIDv7 strings, so sorting ids sorts jobs by creation time.

Both job stores list newest first by comparing ids, which keeps cursors
simple (the last id seen) and needs no second index on ``created_at``.
The 12 bits after the millisecond timestamp hold the sub-millisecond
fraction (RFC 9562, method 3), so ids made one after another in one process
sort in the order they were made.
"""

from __future__ import annotations

import secrets
import time
import uuid


class JobIds:
    """Makes increasing ids for one process (one per Jobs API)."""

    def __init__(self) -> None:
        self._last = 0

    def new(self) -> str:
        # 48 bits of milliseconds + 12 bits of sub-millisecond fraction, as
        # one 60-bit counter that never goes backwards within this process.
        now = time.time_ns() * 4096 // 1_000_000
        stamp = max(now, self._last + 1)
        self._last = stamp
        ms, frac = divmod(stamp, 4096)
        value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | frac << 64 | 0b10 << 62 | secrets.randbits(62)
        return str(uuid.UUID(int=value))


def is_job_id(value: object) -> bool:
    """True for a string shaped like a job id (any UUID, lower-case)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
