"""Issue 10 (5): ``plugboard check`` fits a 100-column terminal, fills its providers column, has ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from plugboard.testing import clean_env, write_project

REPO = Path(__file__).resolve().parents[2]
ALL = {"plugins": ["realtime", "jobs", "books"]}


def check(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plugboard.cli", "check", "--root", str(root), *args],
        capture_output=True, text=True, timeout=120, env=clean_env(env),
    )


def widest(stdout: str) -> int:
    """The longest line, but the one naming the settings folder (a path is as long as it is)."""
    return max(len(line) for line in stdout.splitlines() if not line.startswith("settings from "))


def rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    out = {}
    for line in lines[2:]:
        if not line.strip():
            break
        if not line.startswith(" "):
            name, *cells = line.split(None, 4)
            out[name] = cells
    return out


def test_the_table_fits_100_columns_and_shows_counts(tmp_path):
    proc = check(write_project(tmp_path / "p", ALL))
    assert proc.returncode == 0, proc.stderr
    assert widest(proc.stdout) <= 100, proc.stdout
    assert proc.stdout.splitlines()[0].split() == ["plugin", "version", "hooks", "fields", "providers"]
    table = rows(proc.stdout)
    assert set(table) == {"core", "realtime", "jobs", "books"}
    version, hooks, fields, _providers = table["books"]
    assert version == "0.1.0" and int(hooks) >= 3 and int(fields) >= 5
    # Counts, not lists: no field name in the default output.
    assert "Query.books" not in proc.stdout and "Job.id" not in proc.stdout


def test_the_providers_column_is_filled(tmp_path):
    proc = check(write_project(tmp_path / "p", ALL))
    table = rows(proc.stdout)
    assert table["realtime"][3] == "pubsub=memory"
    assert table["jobs"][3] == "broker=memory, jobstore=records"
    assert table["core"][3] == "pubsub=memory, storage=local, mailer=outbox"
    assert table["books"][3] == "-"


def test_the_providers_column_follows_the_settings(tmp_path, redis_url):
    settings = {**ALL, "redis": {"url": redis_url}, "services": {"pubsub": {"provider": "redis"}}, "jobs": {"broker": "redis"}}
    proc = check(write_project(tmp_path / "p", settings))
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout)
    assert table["realtime"][3] == "pubsub=redis"
    assert table["jobs"][3] == "broker=redis, jobstore=redis"


def test_verbose_lists_hooks_and_fields_within_100_columns(tmp_path):
    proc = check(write_project(tmp_path / "p", ALL), "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert widest(proc.stdout) <= 100
    assert "Query.books" in proc.stdout and "Job.id" in proc.stdout and "subscriptions" in proc.stdout


def test_fields_of_one_plugin(tmp_path):
    root = write_project(tmp_path / "p", ALL)
    proc = check(root, "--fields", "books")
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.split()
    assert "Query.books" in fields and "Mutation.createBook" in fields and "Job.id" not in fields
    proc = check(root, "--fields", "nope")
    assert proc.returncode == 2 and "no loaded plugin named 'nope'" in proc.stderr and "books" in proc.stderr


def test_json_for_tools(tmp_path):
    proc = check(write_project(tmp_path / "p", ALL), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jobs = next(p for p in data["plugins"] if p["name"] == "jobs")
    assert jobs["providers"]["selects"] == {"broker": "memory", "jobstore": "records"}
    assert jobs["providers"]["declares"] == {"broker": ["memory", "redis"], "jobstore": ["records", "redis"]}
    assert "Job.id" in jobs["fields"] and "tasks" in jobs["hooks"]
    assert {s["kind"]: s["provider"] for s in data["services"]} == {"pubsub": "memory", "storage": "local", "mailer": "outbox"}
    assert data["schema_fields"] == sum(len(p["fields"]) for p in data["plugins"])


def test_shipped_settings_fit_too(tmp_path):
    proc = check(REPO, env={"PLUGBOARD_SERVER__DATA_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert widest(proc.stdout) <= 100, proc.stdout
