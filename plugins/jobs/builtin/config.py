"""Settings of the built-in job types: sub-sections of ``jobs:``.

::

    jobs:
      files:                  # where exports, reports and processed images go
        storage: default      # a service of the core's services.storage section
        url_expiry: 1d        # how long the download URLs in job results work
      email:
        mailer: default       # a service of the core's services.mailer section
        from_address: "Plugboard <noreply@localhost>"
      images:
        max_pixels: 50000000  # larger images fail at once (decompression bombs)
        max_outputs: 10
      export:
        datasets:             # GraphQL queries export-data and generate-report may run
          books: {query: "{ books(first: 100) { id title author { name } } }", path: books}
        max_rows: 100000
      reports:
        preview_rows: 20      # rows shown in a report's table
      cleanup:
        temp_max_age: 1d      # storage keys under tmp/ and files in <data_dir>/tmp older than this go

The storage and the mailer are the core's named services: ``jobs.files.storage``
and ``jobs.email.mailer`` name them, and their providers and options are set
once, in the core's ``services:`` section.
"""

from __future__ import annotations

from typing import Any

import attrs

from plugboard import validators
from plugboard.units import Duration


def _address(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if "@" not in value or "\n" in value or "\r" in value:
        raise ValueError("expected an email address such as 'Name <noreply@example.com>'")


@attrs.define(frozen=True, kw_only=True)
class FilesConfig:
    """Where the job types store the files they make."""

    #: The storage service (the core's ``services.storage`` section) the files go to.
    storage: str = "default"
    #: Moved: the service's options live in the ``services.storage`` section (an error says so).
    options: dict[str, Any] | None = None
    #: How long the download URLs in job results work.
    url_expiry: Duration = attrs.field(default=86400.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class EmailConfig:
    """``send-email`` delivery."""

    #: The mailer service (the core's ``services.mailer`` section) that sends.
    mailer: str = "default"
    #: The sender when a job gives no ``from``.
    from_address: str = attrs.field(default="Plugboard <noreply@localhost>", validator=_address)
    #: Moved to the ``services.mailer`` section (an error says what to write).
    smtp: dict[str, Any] | None = None
    outbox: dict[str, Any] | None = None
    options: dict[str, Any] | None = None


@attrs.define(frozen=True, kw_only=True)
class ImagesConfig:
    """``process-image`` limits."""

    #: Images with more pixels fail at once (decompression-bomb guard).
    max_pixels: int = attrs.field(default=50_000_000, validator=validators.positive)
    #: Outputs one job may ask for.
    max_outputs: int = attrs.field(default=10, validator=validators.positive)
    #: Largest output side, in pixels.
    max_dimension: int = attrs.field(default=8192, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class DatasetConfig:
    """One registered dataset: a GraphQL query and where its rows are in the result."""

    query: str = attrs.field(validator=attrs.validators.min_len(1))
    #: Dotted path to the list of rows in ``data`` (``books``, ``library.books``);
    #: empty: the query's only top-level field.
    path: str = ""
    variables: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(frozen=True, kw_only=True)
class ExportConfig:
    """``export-data``: the dataset registry (``generate-report`` uses it too)."""

    datasets: dict[str, DatasetConfig] = attrs.field(factory=dict)
    #: An export with more rows fails rather than filling the disk.
    max_rows: int = attrs.field(default=100_000, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class ReportsConfig:
    """``generate-report``."""

    #: Rows shown in the report's table (the summary covers every row).
    preview_rows: int = attrs.field(default=20, validator=attrs.validators.ge(0))


@attrs.define(frozen=True, kw_only=True)
class CleanupConfig:
    """``cleanup``."""

    #: Temporary files older than this are removed.
    temp_max_age: Duration = attrs.field(default=86400.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class BuiltinConfig:
    """Every built-in job type's settings, for code and tests that want them in one object.

    ``JobsConfig`` carries the same fields directly (``jobs.email``, ``jobs.export`` ...);
    :func:`of` reads them from it.
    """

    files: FilesConfig = FilesConfig()
    email: EmailConfig = EmailConfig()
    images: ImagesConfig = ImagesConfig()
    export: ExportConfig = ExportConfig()
    reports: ReportsConfig = ReportsConfig()
    cleanup: CleanupConfig = CleanupConfig()
    #: ``jobs.retention``: finished job records older than this go (owned by JobsConfig).
    retention: Duration = 7 * 86400.0


def of(config: Any) -> BuiltinConfig:
    """The built-in types' settings from a ``JobsConfig`` (or a BuiltinConfig, or None: defaults)."""
    if config is None:
        return BuiltinConfig()
    if isinstance(config, BuiltinConfig):
        return config
    return BuiltinConfig(
        **{
            name: getattr(config, name)
            for name in ("files", "email", "images", "export", "reports", "cleanup", "retention")
            if hasattr(config, name)
        }
    )
