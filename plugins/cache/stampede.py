"""The optional lock a cache provider offers so that one instance computes a missing entry.

In one process the response cache keeps its own in-flight table; across
instances sharing a backend it asks the provider, if the provider implements
:class:`CacheLock` (the ``redis`` provider does; ``memory`` needs none: its
entries are the process's own).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CacheLock(Protocol):
    """A per-key lock on computing a cache entry, shared by every instance using the backend.

    The implementer's manual:

    - :meth:`acquire` takes the lock for at most ``ttl`` seconds (a holder that
      dies must not block the key for longer) and answers True (the caller
      computes and stores), False (another instance holds it: call
      :meth:`wait`), or None (the backend cannot say: compute without a lock).
    - :meth:`wait` returns the entry once the holder stored it, or None as
      soon as the lock is gone without an entry, on an outage, or after
      ``timeout`` seconds; the caller then computes. It never raises.
    - :meth:`release` drops a lock this process took, and only that one.

    Example::

        taken = await cache.acquire(key, ttl=10)
        if taken is False and (value := await cache.wait(key, timeout=10)) is not None:
            return value
        try:
            value = await compute()
            await cache.set(key, value, ttl=60)
        finally:
            if taken:
                await cache.release(key)
    """

    async def acquire(self, key: str, ttl: float) -> bool | None: ...

    async def wait(self, key: str, timeout: float) -> bytes | None: ...

    async def release(self, key: str) -> None: ...
