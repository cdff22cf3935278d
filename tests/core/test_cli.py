"""The plugboard command as deployers run it: real processes, real ports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from plugboard.testing import clean_env, free_port, write_project

REPO = Path(__file__).resolve().parents[2]
PLUGBOARD = [sys.executable, "-m", "plugboard.cli"]


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PLUGBOARD, *args], capture_output=True, text=True, timeout=timeout, env=clean_env(env))


def post(url: str, body: dict, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_shipped_settings_and_query_books(tmp_path, plugboard_serve):
    # books' mutations need an identity or the operator's token.
    root = write_project(tmp_path / "proj", {"plugins": ["books"], "server": {"admin_token": "op"}})
    server = plugboard_serve(root)
    status, body = post(
        server.url + "/graphql",
        {"query": 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert", publishedYear: 1965}) { id title author { name } } }'},
        {"Authorization": "Bearer op"},
    )
    assert status == 200, body
    assert body["data"]["createBook"]["author"] == {"name": "Frank Herbert"}
    status, body = post(server.url + "/graphql", {"query": "{ books(first: 5) { title author { name books { title } } } }"})
    assert body == {"data": {"books": [{"title": "Dune", "author": {"name": "Frank Herbert", "books": [{"title": "Dune"}]}}]}}
    assert (root / "var" / "plugboard.db").exists()
    assert server.stop() == 0


def test_repo_settings_yaml_serves(tmp_path, plugboard_serve):
    """The shipped settings.yaml runs on embedded defaults (data under a temp dir)."""
    server = plugboard_serve(REPO, env={"PLUGBOARD_SERVER__DATA_DIR": str(tmp_path / "var")})
    status, body = post(server.url + "/graphql", {"query": "{ plugboardVersion }"})
    assert body == {"data": {"plugboardVersion": "0.1.0"}}


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path, plugboard_serve):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "pbslow.py").write_text(
        "import asyncio\n"
        "from plugboard import hookimpl\n"
        "@hookimpl\n"
        "def plugboard_schema():\n"
        "    return 'extend type Query { slow(seconds: Float!): String! }'\n"
        "async def slow(parent, args, context, info):\n"
        "    await asyncio.sleep(args['seconds'])\n"
        "    return 'finished'\n"
        "@hookimpl\n"
        "def plugboard_resolvers():\n"
        "    return {'Query.slow': slow}\n"
        "@hookimpl\n"
        "def plugboard_shutdown(app):\n"
        "    print('shutdown hook ran', flush=True)\n"
    )
    root = write_project(tmp_path / "proj", {"plugins": ["pbslow"], "server": {"shutdown_grace": "10s"}})
    server = plugboard_serve(root, env={"PYTHONPATH": str(module_dir)})
    result = {}

    def slow_request():
        result["response"] = post(server.url + "/graphql", {"query": "{ slow(seconds: 1.5) }"}, timeout=15)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    t.join(15)
    assert result["response"] == (200, {"data": {"slow": "finished"}})
    assert server.proc.wait(15) == 0
    assert "shutdown hook ran" in server.output()


def test_workers_share_one_port(tmp_path, plugboard_serve):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "pbpid.py").write_text(
        "import os\n"
        "from plugboard import hookimpl\n"
        "@hookimpl\n"
        "def plugboard_schema():\n"
        "    return 'extend type Query { pid: Int! }'\n"
        "async def pid(parent, args, context, info):\n"
        "    return os.getpid()\n"
        "@hookimpl\n"
        "def plugboard_resolvers():\n"
        "    return {'Query.pid': pid}\n"
    )
    root = write_project(tmp_path / "proj", {"plugins": ["pbpid"]})
    server = plugboard_serve(root, "--workers", "2", env={"PYTHONPATH": str(module_dir)})
    pids = set()
    deadline = time.time() + 20
    while len(pids) < 2 and time.time() < deadline:
        # New connection each time, so the kernel may pick either listener.
        pids.add(post(server.url + "/graphql", {"query": "{ pid }"})[1]["data"]["pid"])
    assert len(pids) == 2
    assert server.stop() == 0


def test_bad_settings_exit_2_without_traceback(tmp_path):
    root = write_project(tmp_path / "proj", {"server": {"port": "eighty"}})
    proc = run("serve", "--root", str(root))
    assert proc.returncode == 2
    assert "server.port = 'eighty'" in proc.stderr and "settings.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_var_error_names_the_variable(tmp_path):
    root = write_project(tmp_path / "proj", {})
    proc = run("check", "--root", str(root), env={"PLUGBOARD_GRAPHQL__MAX_BODY_SIZE": "10 MX"})
    assert proc.returncode == 2
    assert "graphql.max_body_size = '10 MX' (from env PLUGBOARD_GRAPHQL__MAX_BODY_SIZE)" in proc.stderr


def test_unknown_key_in_section(tmp_path):
    root = write_project(tmp_path / "proj", {"graphql": {"graphiq": False}})
    proc = run("check", "--root", str(root))
    assert proc.returncode == 2
    assert "graphql.graphiq" in proc.stderr and "unknown key" in proc.stderr


def test_unknown_plugin_exit_2(tmp_path):
    root = write_project(tmp_path / "proj", {"plugins": ["nope_not_here"]})
    proc = run("check", "--root", str(root))
    assert proc.returncode == 2
    assert "unknown plugin 'nope_not_here'" in proc.stderr and "books" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_redis_fails_start_up(tmp_path):
    port = free_port()
    root = write_project(tmp_path / "proj", {})
    proc = run("serve", "--root", str(root), "--port", str(free_port()), env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert proc.returncode == 2
    assert f"redis://127.0.0.1:{port}/0" in proc.stderr and "cannot reach" in proc.stderr


def test_check_prints_plugin_table(tmp_path):
    root = write_project(tmp_path / "proj", {"plugins": ["books"]})
    proc = run("check", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["plugin", "version", "hooks", "fields", "providers"]
    books = next(line for line in lines if line.startswith("books"))
    assert books.split()[:2] == ["books", "0.1.0"]
    assert "OK: 2 plugins" in proc.stdout
    # The lists moved behind --verbose / --fields (tests/core/test_check_report.py).
    assert "Query.books" not in proc.stdout


def test_check_on_shipped_settings(tmp_path):
    proc = run("check", "--root", str(REPO), env={"PLUGBOARD_SERVER__DATA_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plugin")


def test_config_shows_sources_and_masks_secrets(tmp_path):
    root = write_project(tmp_path / "proj", {"server": {"port": 9001, "admin_token": "s3cret"}})
    (root / "config").mkdir()
    (root / "config" / "staging.yaml").write_text("graphql:\n  max_files: 3\n")
    proc = run("config", "--root", str(root), env={"PLUGBOARD_ENV": "staging", "REDIS_URL": "redis://x:pw@h:1/0", "PLUGBOARD_GRAPHQL__BATCHING": "true"})
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert "9001" in rows["server.port"] and "settings.yaml:" in rows["server.port"]
    assert "config/staging.yaml:2" in rows["graphql.max_files"]
    assert "env PLUGBOARD_GRAPHQL__BATCHING" in rows["graphql.batching"]
    assert "env REDIS_URL" in rows["redis.url"]
    assert "default" in rows["graphql.path"]
    assert "s3cret" not in proc.stdout and "'***'" in rows["server.admin_token"]
    one = run("config", "server.port", "--root", str(root))
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 3


def test_plugins_lists_installed_and_enabled(tmp_path):
    root = write_project(tmp_path / "proj", {"plugins": [{"name": "books", "enabled": False}]})
    proc = run("plugins", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    books = next(line for line in proc.stdout.splitlines() if line.startswith("books"))
    assert "disabled" in books and "plugboard-books" in books


def test_schema_prints_composed_sdl(tmp_path):
    root = write_project(tmp_path / "proj", {"plugins": ["books"]})
    proc = run("schema", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "plugboardVersion: String!" in proc.stdout and "createBook(input: CreateBookInput!): Book!" in proc.stdout


def test_bin_script_runs_the_same_cli():
    proc = subprocess.run([sys.executable, str(REPO / "bin" / "plugboard"), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "plugboard 0.1.0"


def test_seed_alias_for_a_plugin_not_enabled_is_ignored(tmp_path):
    """A seed alias (SMTP_HOST) for a section no installed or enabled plugin owns must not stop a deployment."""
    root = write_project(tmp_path / "proj", {"env_aliases": {"SMTP_HOST": "mailing.smtp.host"}})
    proc = run("check", "--root", str(root), env={"SMTP_HOST": "mail.example.com"})
    assert proc.returncode == 0, proc.stderr
    proc = run("check", "--root", str(root), env={"PLUGBOARD_MAILING__SMTP__HOST": "mail.example.com"})
    assert proc.returncode == 2 and "unknown section" in proc.stderr
