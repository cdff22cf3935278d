"""The core's own contributions, registered like a plugin named ``core``.

Keeping them on the same hooks as every plugin means the core's scalars and
fields show up in ``plugboard check`` and in the inspect endpoint, and go
through the same duplicate checks.
"""

from __future__ import annotations

from typing import Any

from plugboard import __version__, hookimpl, keys
from plugboard.graphql.scalars import DateTimeScalar, JSONScalar, UploadScalar
from plugboard.providers.registry import ProviderSpec

NAME = "core"


@hookimpl
def plugboard_scalars() -> dict[str, Any]:
    return {"JSON": JSONScalar, "Upload": UploadScalar, "DateTime": DateTimeScalar}


async def _plugboard_version(parent: Any, args: dict, context: Any, info: Any) -> str:
    return __version__


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    return {"Query.plugboardVersion": _plugboard_version}


@hookimpl
def plugboard_providers() -> list[ProviderSpec]:
    # Only the config classes are imported here; factories are lazy paths.
    from plugboard.providers.outbox import OutboxConfig
    from plugboard.providers.pubsub import PubSubOptions
    from plugboard.providers.smtp import SmtpConfig
    from plugboard.providers.storage import LocalStorageConfig

    return [
        ProviderSpec(
            kind="storage",
            name="local",
            factory="plugboard.providers.storage:LocalStorage",
            config=LocalStorageConfig,
            description="files under <server.data_dir>/files, downloaded through signed, expiring URLs",
        ),
        ProviderSpec(
            kind="mailer",
            name="outbox",
            factory="plugboard.providers.outbox:OutboxMailer",
            config=OutboxConfig,
            description="writes each message as an RFC 5322 .eml file (default <data_dir>/outbox)",
        ),
        ProviderSpec(
            kind="mailer",
            name="smtp",
            factory="plugboard.providers.smtp:SmtpMailer",
            config=SmtpConfig,
            requires="aiosmtplib",
            description="delivers through an SMTP server (aiosmtplib)",
        ),
        ProviderSpec(
            kind="pubsub",
            name="memory",
            factory="plugboard.providers.memory_pubsub:MemoryPubSub",
            config=PubSubOptions,
            description="in-process fan-out (one server process)",
        ),
        ProviderSpec(
            kind="pubsub",
            name="redis",
            factory="plugboard.providers.redis_pubsub:RedisPubSub",
            config=PubSubOptions,
            requires="redis",
            description="Redis pub/sub through the shared redis.url client (several instances)",
        ),
    ]


@hookimpl
def plugboard_configure(app: Any) -> None:
    from plugboard.providers.storage import FileSigner

    # The key itself is read (or made) on first use: no I/O while building the app.
    server = app[keys.CORE_CONFIG].server
    app[keys.FILE_SIGNER] = FileSigner(server.secret_key, app[keys.SETTINGS].root / server.data_dir)
