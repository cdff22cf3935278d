"""``export-data``: a registered dataset as CSV or JSON in file storage.

Arguments: ``dataset`` (a name in ``jobs.export.datasets``) and ``format``
(``csv``, the default, or ``json``). CSV flattens nested objects into dotted
columns (``author.name``) and writes lists as JSON text; cells that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return) get a leading ``'``. JSON keeps the rows as the
query returned them. Result: ``{key, url, rows, format, dataset}``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Callable, Literal

from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.plugins.jobs.builtin.datasets import columns, fetch_rows, flatten
from plugboard.plugins.jobs.builtin.services import Services
from plugboard.tasks import PermanentError, TaskContext

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(rows: list[Any]) -> bytes:
    flat = [flatten(row) for row in rows]
    header = columns(flat)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in flat:
        writer.writerow([_csv_cell(row.get(column)) for column in header])
    return buffer.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_json(rows: list[Any]) -> bytes:
    return json.dumps(rows, ensure_ascii=False, indent=1, default=str).encode("utf-8")


def make_task(settings: BuiltinConfig, services: Services) -> Callable[..., Any]:
    async def export_data(job: TaskContext, dataset: str, format: Literal["csv", "json"] = "csv") -> dict[str, Any]:
        if format not in FORMATS:
            raise PermanentError(f"export-data: format must be one of {', '.join(FORMATS)}, not {format!r}")
        rows = await fetch_rows(job, settings, dataset)
        await job.progress(50)
        data = to_csv(rows) if format == "csv" else to_json(rows)
        storage = await services.storage(job.app)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        key = f"exports/{dataset}-{stamp}-{job.id}.{format}"
        await storage.put(key, data, content_type=FORMATS[format])
        await job.progress(90)
        url = await storage.url(key, expires_in=settings.files.url_expiry)
        return {"key": key, "url": url, "rows": len(rows), "format": format, "dataset": dataset}

    return export_data
