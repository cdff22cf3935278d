"""The cache plugin's providers of the core's ``cache`` kind: ``memory`` and ``redis``.

Our own code rather than cashews or aiocache, after weighing both:

- the core hands every plugin one shared Redis client (``app[keys.REDIS]``);
  both libraries build their own client and pool from a URL;
- cashews keeps a process-wide ``cache`` object (a global registry, which
  Plugboard's apps must not share); its memory backend bounds entries by
  count only (no byte bound), and its tags need key templates registered up
  front; aiocache has no tags and no size bound in memory at all;
- the Protocol is small (bytes, TTL, tags, invalidate, plus ``drop_local``
  for the multi-level layer), and what matters on a hot path measured in
  microseconds (bounded timeouts with a back-off while Redis is down, one
  ``MGET`` for concurrent reads, tag sets changed atomically in Lua) is a
  few dozen lines here, not configuration of a library's layers.
"""
