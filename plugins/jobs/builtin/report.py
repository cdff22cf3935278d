"""``generate-report``: a small summary document of a registered dataset.

Arguments: ``dataset`` (as for ``export-data``), ``format`` (``html``, the
default, or ``markdown``) and an optional ``title``. The document has the
title, when it was generated, the row count, a summary per column (non-empty
values, distinct values, and min/max when every value is a number) and the
first ``jobs.reports.preview_rows`` rows as a table. Every value from the
data is escaped (HTML entities; Markdown table characters). Stored in file
storage; result ``{key, url, format, rows, dataset}``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from typing import Any, Callable, Literal

import attrs

from plugboard.plugins.jobs.builtin.config import BuiltinConfig
from plugboard.plugins.jobs.builtin.datasets import columns, fetch_rows, flatten
from plugboard.plugins.jobs.builtin.services import Services
from plugboard.tasks import PermanentError, TaskContext

FORMATS = {"html": ("html", "text/html; charset=utf-8"), "markdown": ("md", "text/markdown; charset=utf-8")}


@attrs.define(frozen=True)
class ColumnSummary:
    name: str
    non_empty: int
    distinct: int
    minimum: float | int | None = None
    maximum: float | int | None = None


@attrs.define(frozen=True)
class Report:
    title: str
    generated_at: str
    row_count: int
    summaries: list[ColumnSummary]
    columns: list[str]
    preview: list[dict[str, Any]]


def summarize(rows: list[Any], title: str, preview_rows: int, now: float | None = None) -> Report:
    flat = [flatten(row) for row in rows]
    names = columns(flat)
    summaries = []
    for name in names:
        values = [row.get(name) for row in flat]
        present = [v for v in values if v is not None and v != ""]
        distinct = len({json.dumps(v, sort_keys=True, default=str) for v in present})
        numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
        numeric = bool(present) and len(numbers) == len(present)
        summaries.append(
            ColumnSummary(
                name=name,
                non_empty=len(present),
                distinct=distinct,
                minimum=min(numbers) if numeric else None,
                maximum=max(numbers) if numeric else None,
            )
        )
    generated = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc)
    return Report(
        title=title,
        generated_at=generated.isoformat(timespec="seconds").replace("+00:00", "Z"),
        row_count=len(rows),
        summaries=summaries,
        columns=names,
        preview=flat[:preview_rows],
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def render_html(report: Report) -> str:
    e = _e
    summary_rows = "\n".join(
        f"<tr><th scope=\"row\">{e(s.name)}</th><td>{s.non_empty}</td><td>{s.distinct}</td>"
        f"<td>{e(s.minimum)}</td><td>{e(s.maximum)}</td></tr>"
        for s in report.summaries
    )
    head = "".join(f"<th scope=\"col\">{e(c)}</th>" for c in report.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{e(row.get(c))}</td>" for c in report.columns) + "</tr>" for row in report.preview)
    shown = f"The first {len(report.preview)} of {report.row_count} rows." if len(report.preview) < report.row_count else f"All {report.row_count} rows."
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(report.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }}
thead th {{ background: #f3f3f3; }}
</style>
</head>
<body>
<h1>{e(report.title)}</h1>
<p>Generated at <time datetime="{e(report.generated_at)}">{e(report.generated_at)}</time>. Rows: <strong>{report.row_count}</strong>.</p>
<h2>Columns</h2>
<table>
<thead><tr><th scope="col">Column</th><th scope="col">Non-empty</th><th scope="col">Distinct</th><th scope="col">Min</th><th scope="col">Max</th></tr></thead>
<tbody>
{summary_rows}
</tbody>
</table>
<h2>Rows</h2>
<p>{shown}</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</body>
</html>
"""


def _md(value: Any) -> str:
    text = _text(value).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    # Keep data from turning into markup: emphasis, links, raw HTML, code.
    for ch in ("*", "_", "`", "[", "]", "<", ">", "#"):
        text = text.replace(ch, "\\" + ch)
    return text


def render_markdown(report: Report) -> str:
    lines = [
        f"# {_md(report.title)}",
        "",
        f"Generated at {report.generated_at}. Rows: **{report.row_count}**.",
        "",
        "## Columns",
        "",
        "| Column | Non-empty | Distinct | Min | Max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for s in report.summaries:
        lines.append(f"| {_md(s.name)} | {s.non_empty} | {s.distinct} | {_md(s.minimum)} | {_md(s.maximum)} |")
    lines += ["", "## Rows", ""]
    if len(report.preview) < report.row_count:
        lines += [f"The first {len(report.preview)} of {report.row_count} rows.", ""]
    if report.columns:
        lines.append("| " + " | ".join(_md(c) for c in report.columns) + " |")
        lines.append("|" + " --- |" * len(report.columns))
        for row in report.preview:
            lines.append("| " + " | ".join(_md(row.get(c)) for c in report.columns) + " |")
    return "\n".join(lines) + "\n"


def make_task(settings: BuiltinConfig, services: Services) -> Callable[..., Any]:
    async def generate_report(job: TaskContext, dataset: str, format: Literal["html", "markdown"] = "html", title: str | None = None) -> dict[str, Any]:
        if format not in FORMATS:
            raise PermanentError(f"generate-report: format must be one of {', '.join(FORMATS)}, not {format!r}")
        rows = await fetch_rows(job, settings, dataset)
        await job.progress(50)
        report = summarize(rows, title or f"{dataset} report", settings.reports.preview_rows)
        document = render_html(report) if format == "html" else render_markdown(report)
        ext, content_type = FORMATS[format]
        storage = await services.storage(job.app)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        key = f"reports/{dataset}-{stamp}-{job.id}.{ext}"
        await storage.put(key, document.encode("utf-8"), content_type=content_type)
        await job.progress(90)
        url = await storage.url(key, expires_in=settings.files.url_expiry)
        return {"key": key, "url": url, "format": format, "rows": len(rows), "dataset": dataset}

    return generate_report
