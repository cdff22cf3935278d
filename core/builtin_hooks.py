"""The core's own contributions, registered like a plugin named ``core``.

Keeping them on the same hooks as every plugin means the core's scalars and
fields show up in ``plugboard check`` and in the inspect endpoint, and go
through the same duplicate checks.
"""

from __future__ import annotations

from typing import Any

from plugboard import __version__, hookimpl
from plugboard.graphql.scalars import JSONScalar, UploadScalar

NAME = "core"


@hookimpl
def plugboard_scalars() -> dict[str, Any]:
    return {"JSON": JSONScalar, "Upload": UploadScalar}


async def _plugboard_version(parent: Any, args: dict, context: Any, info: Any) -> str:
    return __version__


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return {"Query.plugboardVersion": _plugboard_version}
