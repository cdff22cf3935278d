"""The cache plugin's providers of the core's ``cache`` kind: ``memory`` and ``redis``."""
