"""Plugboard: a configuration-driven GraphQL plugin runtime.

Public API only. Importing this package runs nothing: no plugin manager, no
application and no engine exist until :func:`plugboard.app.create_app` builds them.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for hook specifications (used by the core and by ``plugboard_addhooks``).
hookspec = pluggy.HookspecMarker("plugboard")

#: Marker for hook implementations: ``from plugboard import hookimpl``.
hookimpl = pluggy.HookimplMarker("plugboard")

__all__ = ["__version__", "hookimpl", "hookspec"]
