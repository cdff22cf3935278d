"""The ``memory`` and ``redis`` providers of the core's ``ratelimit`` kind: one sliding-window counter (:mod:`.window`)."""
