"""The ``memory`` and ``redis`` providers of the core's ``ratelimit`` kind, on the ``limits`` library."""
