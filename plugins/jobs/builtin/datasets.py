"""Registered datasets: GraphQL queries whose rows ``export-data`` and ``generate-report`` use.

A dataset is ``jobs.export.datasets.<name>: {query, path, variables}``. It
runs through the app's operation runner, as a request would (operation steps
included), with an internal context: no request, no identity, so no admin
rights; resolvers see ``context.transport == "job"``. The rows are the list
at ``path`` in ``data`` (a connection's ``edges[].node`` is unwrapped).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from plugboard import keys
from plugboard.graphql.context import Context
from plugboard.graphql.operation import Operation, OperationRejected
from plugboard.plugins.jobs.builtin.config import BuiltinConfig, DatasetConfig
from plugboard.tasks import PermanentError, TaskContext

#: Error codes that say the query can never succeed as it is.
_FINAL_CODES = frozenset({"BAD_REQUEST", "BAD_USER_INPUT", "FORBIDDEN", "UNAUTHENTICATED", "NOT_FOUND", "GRAPHQL_VALIDATION_FAILED"})


def dataset(settings: BuiltinConfig, name: str) -> DatasetConfig:
    datasets = settings.export.datasets
    if name not in datasets:
        known = ", ".join(sorted(datasets)) or "none (jobs.export.datasets is empty)"
        raise PermanentError(f"unknown dataset {name!r}; registered: {known}")
    return datasets[name]


async def fetch_rows(job: TaskContext, settings: BuiltinConfig, name: str) -> list[Any]:
    """Run dataset ``name``'s query; its rows, or PermanentError / a retryable error."""
    ds = dataset(settings, name)
    app = job.app
    context = Context(app=app, request=None, request_id=f"job-{job.id}", transport="job")
    op = Operation(
        query=ds.query,
        variables=dict(ds.variables) or None,
        operation_name=None,
        extensions=None,
        context=context,
        transport="job",
    )
    runner = app[keys.RUNNER]
    try:
        runner.prepare(op, allowed_types=("query",))
        result = await runner.run(op)
    except OperationRejected as e:
        raise PermanentError(f"dataset {name!r}: {e}") from None
    errors = result.get("errors") or []
    if errors:
        messages = "; ".join(str(err.get("message")) for err in errors)
        codes = {(err.get("extensions") or {}).get("code") for err in errors}
        if codes & _FINAL_CODES:
            raise PermanentError(f"dataset {name!r}: {messages}")
        # Anything else (an internal error: the database away ...) may pass.
        raise RuntimeError(f"dataset {name!r}: {messages}")
    rows = rows_at(result.get("data"), ds.path, name)
    if len(rows) > settings.export.max_rows:
        raise PermanentError(f"dataset {name!r} has {len(rows)} rows, more than jobs.export.max_rows ({settings.export.max_rows})")
    return rows


def rows_at(data: Any, path: str, name: str = "") -> list[Any]:
    """The list at dotted ``path`` in ``data`` (the only top-level field when empty)."""
    value = data
    if not path:
        if not isinstance(data, dict) or len(data) != 1:
            raise PermanentError(f"dataset {name!r}: the query has several top-level fields; set its path")
        value = next(iter(data.values()))
    else:
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise PermanentError(f"dataset {name!r}: no {path!r} in the query's result")
            value = value[part]
    if isinstance(value, dict) and isinstance(value.get("edges"), list):
        value = [edge.get("node") if isinstance(edge, dict) else edge for edge in value["edges"]]
    if value is None:
        return []
    if not isinstance(value, list):
        raise PermanentError(f"dataset {name!r}: {path or 'the result'} is not a list")
    return value


def flatten(row: Any, prefix: str = "") -> dict[str, Any]:
    """``{"author": {"name": "X"}}`` -> ``{"author.name": "X"}``; lists become JSON text."""
    if not isinstance(row, dict):
        return {prefix or "value": _cell(row)}
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = _cell(value)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every column, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)
