"""The core's own contributions, registered like a plugin named ``core``.

Keeping them on the same hooks as every plugin means the core's scalars and
fields show up in ``plugboard check`` and in the inspect endpoint, and go
through the same duplicate checks.
"""

from __future__ import annotations

from typing import Any

from plugboard import __version__, hookimpl, keys
from plugboard.graphql.scalars import JSONScalar, UploadScalar
from plugboard.providers.registry import ProviderSpec

NAME = "core"


@hookimpl
def plugboard_scalars() -> dict[str, Any]:
    return {"JSON": JSONScalar, "Upload": UploadScalar}


async def _plugboard_version(parent: Any, args: dict, context: Any, info: Any) -> str:
    return __version__


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return {"Query.plugboardVersion": _plugboard_version}


@hookimpl
def plugboard_providers() -> list[ProviderSpec]:
    from plugboard.providers.storage import LocalStorageConfig

    return [
        ProviderSpec(
            kind="storage",
            name="local",
            factory="plugboard.providers.storage:LocalStorage",
            config=LocalStorageConfig,
            description="files under <server.data_dir>/files, downloaded through signed, expiring URLs",
        )
    ]


@hookimpl
def plugboard_configure(app: Any) -> None:
    from plugboard.providers.storage import FileSigner

    # The key itself is read (or made) on first use: no I/O while building the app.
    server = app[keys.CORE_CONFIG].server
    app[keys.FILE_SIGNER] = FileSigner(server.secret_key, app[keys.SETTINGS].root / server.data_dir)
