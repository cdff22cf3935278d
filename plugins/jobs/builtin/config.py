"""Settings of the built-in job types: sub-sections of ``jobs:``.

::

    jobs:
      files:                  # where exports, reports and processed images go
        storage: local        # provider kind "storage" (the core's local files; s3/gcs/... from plugins)
        options: {}           # that provider's own options (local: {base_url: https://api.example.com})
        url_expiry: 1d        # how long the download URLs in job results work
      email:
        mailer: outbox        # provider kind "mailer": outbox (.eml files in <data_dir>/outbox) | smtp
        from_address: "Plugboard <noreply@localhost>"
        smtp: {host: localhost, port: 587, user: null, password: null, starttls: auto, tls: false, timeout: 30s}
        outbox: {dir: null}   # null: <data_dir>/outbox
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

Email delivery reads ``jobs.email.*`` only: the ``SMTP_*`` environment aliases
map to ``email.smtp.*``, which belongs to the (future) email plugin.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Secret


def _address(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if "@" not in value or "\n" in value or "\r" in value:
        raise ValueError("expected an email address such as 'Name <noreply@example.com>'")


@attrs.define(frozen=True, kw_only=True)
class FilesConfig:
    """Where the job types store the files they make."""

    #: Provider kind ``storage``: ``local`` (the core's), or one a plugin declares.
    storage: str = "local"
    #: The storage provider's own options, validated by its config class at first use.
    options: dict[str, Any] = attrs.field(factory=dict)
    #: How long the download URLs in job results work.
    url_expiry: Duration = attrs.field(default=86400.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class SmtpConfig:
    """The ``smtp`` mailer's server."""

    host: str = "localhost"
    port: int = attrs.field(default=587, validator=validators.port)
    user: str | None = None
    password: Secret | None = None
    #: Upgrade with STARTTLS: ``auto`` (when the server offers it), true (required) or false.
    starttls: Literal["auto"] | bool = "auto"
    #: Implicit TLS from the first byte (port 465); excludes ``starttls: true``.
    tls: bool = False
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)

    def __attrs_post_init__(self) -> None:
        if self.tls and self.starttls is True:
            raise ValueError("tls and starttls exclude each other: tls is for port 465, starttls for 587")


@attrs.define(frozen=True, kw_only=True)
class OutboxConfig:
    """The ``outbox`` mailer: each message becomes an RFC 5322 ``.eml`` file."""

    #: Null: ``<server.data_dir>/outbox``; relative paths are under the project root.
    dir: str | None = None


@attrs.define(frozen=True, kw_only=True)
class EmailConfig:
    """``send-email`` delivery."""

    #: Provider kind ``mailer``: ``outbox`` (files, the embedded default) or ``smtp``.
    mailer: str = "outbox"
    #: The sender when a job gives no ``from``.
    from_address: str = attrs.field(default="Plugboard <noreply@localhost>", validator=_address)
    smtp: SmtpConfig = SmtpConfig()
    outbox: OutboxConfig = OutboxConfig()
    #: Options of any other mailer a plugin declares.
    options: dict[str, Any] = attrs.field(factory=dict)


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
