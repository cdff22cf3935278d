"""The uploads plugin: the seed's File Upload System.

Enabled with ``- uploads`` in settings.yaml; settings under ``uploads:``
(:class:`~plugboard.plugins.uploads.config.UploadsConfig`). Files go to a
storage service of the core's ``services.storage`` section; this plugin adds
the ``s3``, ``gcs`` and ``cloudinary`` storage providers (``local`` is the
core's). Modules: ``config`` (settings), ``checks`` (start-up checks against
the core's settings), ``validation`` (type sniffing, image checks, file
names), ``service`` (storing, records, URLs, direct uploads, variants,
cleanup), ``resolvers`` (the File API), ``tables`` (records), ``tasks``
(``uploads-cleanup``), ``providers/`` (storage providers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl
from plugboard.plugins.uploads.config import UploadsConfig


@hookimpl
def plugboard_config_class() -> type:
    return UploadsConfig


@hookimpl
def plugboard_configure(app: Any, config: UploadsConfig) -> None:
    from plugboard.plugins.uploads.keys import UPLOADS
    from plugboard.plugins.uploads.service import UploadService
    from plugboard.plugins.uploads.checks import check_config

    check_config(app, config)
    app[UPLOADS] = UploadService(app, config)


@hookimpl
def plugboard_upload_rules(config: UploadsConfig) -> dict[str, Any]:
    # maxFileSize and allowedTypes applied by the multipart transport as the
    # bytes arrive: a refused file is never received in full.
    from plugboard.plugins.uploads.validation import upload_rules

    return upload_rules(config)


@hookimpl
def plugboard_schema() -> Path:
    return Path(__file__).with_name("schema.graphql")


@hookimpl
def plugboard_resolvers() -> dict[str, Any]:
    from plugboard.plugins.uploads.resolvers import RESOLVERS

    return dict(RESOLVERS)


@hookimpl
def plugboard_tables(metadata: Any) -> None:
    from plugboard.plugins.uploads.tables import define_tables

    define_tables(metadata)


@hookimpl
def plugboard_routes(app: Any) -> list:
    from aiohttp import web

    from plugboard.plugins.uploads.keys import UPLOADS
    from plugboard.plugins.uploads.service import DIRECT_PATH, PUBLIC_PATH

    async def direct_upload(request: web.Request) -> web.StreamResponse:
        return await request.app[UPLOADS].receive_direct(request)

    async def public_file(request: web.Request) -> web.StreamResponse:
        return await request.app[UPLOADS].serve_public(request)

    return [
        web.put(DIRECT_PATH + "/{id}", direct_upload),
        web.get(PUBLIC_PATH + "/{id}", public_file),
        web.get(PUBLIC_PATH + "/{id}/{variant}", public_file),
    ]


@hookimpl
def plugboard_providers() -> list:
    from plugboard.plugins.uploads.providers import SPECS

    return list(SPECS)


@hookimpl
def plugboard_schedules() -> list:
    # Expired direct uploads, orphan objects and stale pending records, daily
    # (after the jobs plugin's own 03:00 cleanup). Runs where jobs run.
    return [{"task": "uploads-cleanup", "cron": "30 3 * * *", "args": {}}]


@hookimpl
def plugboard_tasks(app: Any, config: UploadsConfig) -> dict[str, Any]:
    from plugboard.plugins.uploads.tasks import make_tasks

    return make_tasks(app)
