"""Start-up checks of the uploads settings against the core's (services, multipart limits)."""

from __future__ import annotations

from typing import Any

from plugboard import keys
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.plugins.uploads.config import UploadsConfig


def check_config(app: Any, config: UploadsConfig) -> None:
    """Every problem at once: the named storage service, the seed's provider, the limits."""
    settings = app[keys.SETTINGS]
    core = app[keys.CORE_CONFIG]
    problems: list[ConfigProblem] = []

    def problem(key: str, value: Any, reason: str) -> None:
        problems.append(ConfigProblem(key, value, reason, settings.source(key)))

    services = app[keys.SERVICES]
    try:
        decl = services.require("storage", config.storage, key="uploads.storage", source=settings.source("uploads.storage"))
    except ConfigError as e:
        problems.extend(e.problems)
        decl = None
    if decl is not None and config.provider is not None and decl.provider != config.provider:
        problem(
            "uploads.provider",
            config.provider,
            f"the storage service {config.storage!r} uses the {decl.provider!r} provider; "
            f"select {config.provider!r} with services.storage.{config.storage}.provider "
            f"(UPLOAD_PROVIDER sets it for the default service), or drop uploads.provider",
        )
    if config.max_file_size > core.graphql.max_file_size:
        problem(
            "uploads.max_file_size",
            config.max_file_size,
            f"larger than graphql.max_file_size ({core.graphql.max_file_size} bytes), which the multipart "
            "transport enforces first: raise graphql.max_file_size too",
        )
    if not core.graphql.uploads:
        problem("graphql.uploads", False, "the uploads plugin needs multipart uploads: set graphql.uploads: true")
    if problems:
        raise ConfigError(problems)
