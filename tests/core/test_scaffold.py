"""``plugboard init`` and ``plugboard new-plugin``, through the CLI in-process and as a command.

The last group is the real proof that a generated plugin is a working package:
it is pip-installed into a throwaway ``--target`` folder (never the shared
venv), then, with only ``PYTHONPATH`` pointing there, its own generated test
passes and ``plugboard check`` loads it purely because settings.yaml lists it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from plugboard import cli, scaffold

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("plugboard")
# The console script is what users run; `-m` keeps the tests usable before the
# core's pyproject has installed it.
PLUGBOARD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "plugboard.cli"]
PROJECT_FILES = ["settings.yaml", "schema.d/README.txt", "config/production.yaml", ".gitignore"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Settings from the developer's shell must not leak into the commands, and
    # PYTHONPATH is only ever the one a test sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k not in ("REDIS_URL", "PYTHONPATH")}
    env.update(extra or {})
    return env


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(env), cwd=cwd)


def plugboard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run([*PLUGBOARD, *args], env=env)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.lstrip().startswith("#")]


# --------------------------------------------------------------------------
# plugboard init
# --------------------------------------------------------------------------


def test_init_writes_the_project_files(tmp_path, capsys):
    project = tmp_path / "a" / "project"  # created, parents included
    assert cli.main(["init", str(project)]) == 0
    out = capsys.readouterr().out
    for rel in PROJECT_FILES:
        assert (project / rel).is_file(), rel
        assert rel in out
    assert "plugboard serve" in out

    settings = (project / "settings.yaml").read_text()
    shipped = (REPO / "settings.yaml").read_text()
    data, shipped_data = yaml.safe_load(settings), yaml.safe_load(shipped)
    assert data["plugins"] == []
    # The template is the repo's settings.yaml: same keys, values and comments.
    assert {k: v for k, v in data.items() if k != "plugins"} == {k: v for k, v in shipped_data.items() if k != "plugins"}
    assert _comments(settings) == _comments(shipped)

    production = (project / "config/production.yaml").read_text()
    assert yaml.safe_load(production) == yaml.safe_load((REPO / "config/production.yaml").read_text())
    assert "var/" in (project / ".gitignore").read_text().splitlines()
    readme = (project / "schema.d/README.txt").read_text()
    assert ".graphql" in readme and "base schema" in readme


def test_init_then_check_succeeds(tmp_path):
    project = tmp_path / "project"
    assert cli.main(["init", str(project)]) == 0
    result = plugboard("check", "--root", str(project))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK:" in result.stdout
    assert "plugboardVersion" in plugboard("schema", "--root", str(project)).stdout


def test_init_twice_refuses_and_changes_nothing(tmp_path):
    project = tmp_path / "project"
    first = plugboard("init", str(project))
    assert first.returncode == 0, first.stderr
    assert "plugboard serve" in first.stdout
    (project / "settings.yaml").write_text("# my own settings\nplugins: [books]\n")
    before = snapshot(project)

    again = plugboard("init", str(project))
    assert again.returncode == 2
    for rel in PROJECT_FILES:
        assert rel in again.stderr
    assert "--force" in again.stderr
    assert snapshot(project) == before

    forced = plugboard("init", str(project), "--force")
    assert forced.returncode == 0, forced.stderr
    assert yaml.safe_load((project / "settings.yaml").read_text())["plugins"] == []


def test_init_refuses_when_any_one_file_exists_and_writes_nothing(tmp_path, capsys):
    (tmp_path / ".gitignore").write_text("node_modules/\n")
    assert cli.main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert ".gitignore" in err and "settings.yaml" not in err
    assert snapshot(tmp_path) == {".gitignore": b"node_modules/\n"}


def test_init_into_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert cli.main(["init", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------
# plugboard new-plugin
# --------------------------------------------------------------------------


def test_new_plugin_creates_the_package(tmp_path, capsys):
    assert cli.main(["new-plugin", "reviews", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    pkg = tmp_path / "plugboard-reviews"
    assert set(snapshot(pkg)) == {
        "pyproject.toml",
        "README.md",
        "plugboard_reviews/__init__.py",
        "plugboard_reviews/config.py",
        "plugboard_reviews/resolvers.py",
        "plugboard_reviews/schema.graphql",
        "tests/test_reviews.py",
    }
    assert "pip install" in out and "reviews" in out

    pyproject = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    assert pyproject["project"]["name"] == "plugboard-reviews"
    assert pyproject["project"]["dependencies"] == ["plugboard"]
    assert pyproject["project"]["entry-points"]["plugboard.plugins"] == {"reviews": "plugboard_reviews"}
    assert pyproject["tool"]["pytest"]["ini_options"]["asyncio_mode"] == "auto"

    assert "extend type Query" in (pkg / "plugboard_reviews/schema.graphql").read_text()
    assert "reviewsHello(name: String): String!" in (pkg / "plugboard_reviews/schema.graphql").read_text()
    assert 'PLUGIN_CONFIGS]["reviews"]' in (pkg / "plugboard_reviews/resolvers.py").read_text()
    assert 'greeting: str = "Hello"' in (pkg / "plugboard_reviews/config.py").read_text()
    readme = (pkg / "README.md").read_text()
    assert "pip install" in readme and "- reviews" in readme
    for path in pkg.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every generated module is valid Python
    # The generated test uses the test kit's fixtures rather than building apps itself.
    generated_test = (pkg / "tests/test_reviews.py").read_text()
    assert "plugboard_client" in generated_test and "create_app" not in generated_test


@pytest.mark.parametrize(
    ("given", "folder", "module", "plugin", "field"),
    [
        ("reviews", "plugboard-reviews", "plugboard_reviews", "reviews", "reviewsHello"),
        ("plugboard-reviews", "plugboard-reviews", "plugboard_reviews", "reviews", "reviewsHello"),
        ("plugboard_reviews", "plugboard-reviews", "plugboard_reviews", "reviews", "reviewsHello"),
        ("book-reviews", "plugboard-book-reviews", "plugboard_book_reviews", "book_reviews", "bookReviewsHello"),
        ("geo2_ip", "plugboard-geo2-ip", "plugboard_geo2_ip", "geo2_ip", "geo2IpHello"),
    ],
)
def test_new_plugin_names(tmp_path, given, folder, module, plugin, field):
    assert cli.main(["new-plugin", given, "--dir", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [folder]  # the prefix is never doubled
    pkg = tmp_path / folder
    pyproject = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["plugboard.plugins"] == {plugin: module}
    assert f"{field}(name: String)" in (pkg / module / "schema.graphql").read_text()
    assert (pkg / "tests" / f"test_{plugin}.py").is_file()


@pytest.mark.parametrize(
    "bad",
    ["Reviews", "my reviews", "-reviews", "reviews-", "a--b", "9lives", "", "plugboard-", "plugboard", "ré", "../evil", "a/b", "a.b", "server", "plugins"],
)
def test_bad_plugin_names_are_usage_errors(tmp_path, capsys, bad):
    # `--` so argparse hands "-reviews" over as the name rather than as an option.
    assert cli.main(["new-plugin", "--dir", str(tmp_path), "--", bad]) == 2
    err = capsys.readouterr().err
    assert "invalid plugin name" in err and repr(bad) in err
    assert list(tmp_path.iterdir()) == []


def test_new_plugin_refuses_an_existing_folder(tmp_path, capsys):
    assert cli.main(["new-plugin", "reviews", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "plugboard-reviews"
    (pkg / "plugboard_reviews/config.py").write_text("# edited\n")
    (pkg / "NOTES.md").write_text("mine\n")
    before = snapshot(pkg)
    capsys.readouterr()

    assert cli.main(["new-plugin", "plugboard-reviews", "--dir", str(tmp_path)]) == 2
    assert "plugboard-reviews" in capsys.readouterr().err
    assert snapshot(pkg) == before

    assert cli.main(["new-plugin", "reviews", "--dir", str(tmp_path), "--force"]) == 0
    assert "greeting" in (pkg / "plugboard_reviews/config.py").read_text()
    assert (pkg / "NOTES.md").read_text() == "mine\n"  # --force replaces generated files only


def test_reserved_names_cover_the_core_sections():
    from plugboard.core_config import CORE_SECTIONS

    assert set(CORE_SECTIONS) <= scaffold.RESERVED_NAMES


# --------------------------------------------------------------------------
# The generated plugin, installed into a throwaway folder
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> tuple[Path, Path]:
    """``plugboard new-plugin reviews`` pip-installed into ``<tmp>/site``: (package dir, site).

    pip builds it as it does for a user: with build isolation, fetching the
    build backend the generated pyproject names (setuptools) from the index or
    its cache. The test venv's own setuptools plays no part, so this works
    where the venv has none (Python 3.12+ venvs) or an old one.
    """
    tmp = tmp_path_factory.mktemp("plugin")
    made = plugboard("new-plugin", "reviews", "--dir", str(tmp))
    assert made.returncode == 0, made.stderr
    pkg, site = tmp / "plugboard-reviews", tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps"]
    got = run([*pip, "--target", str(site), str(pkg)], timeout=300)
    assert got.returncode == 0, got.stdout + got.stderr
    assert (site / "plugboard_reviews" / "schema.graphql").is_file()  # package data shipped
    return pkg, site


def test_generated_plugin_passes_its_own_test(installed_plugin):
    pkg, site = installed_plugin
    env = {"PYTHONPATH": str(site)}
    # -P: the package folder must not shadow the installed copy via the cwd.
    where = run([sys.executable, "-P", "-c", "import plugboard_reviews; print(plugboard_reviews.__file__)"], env=env, cwd=pkg)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    result = run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider"], env=env, cwd=pkg, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_generated_plugin_is_enabled_by_settings_yaml(installed_plugin, tmp_path):
    _, site = installed_plugin
    project = tmp_path / "project"
    assert plugboard("init", str(project)).returncode == 0
    settings = project / "settings.yaml"
    text = settings.read_text()
    assert "\nplugins: []\n" in text
    settings.write_text(text.replace("\nplugins: []\n", "\nplugins:\n  - reviews\n\nreviews:\n  greeting: Howdy\n"))

    env = {"PYTHONPATH": str(site)}
    check = plugboard("check", "--root", str(project), env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    row = next(line for line in check.stdout.splitlines() if line.startswith("reviews "))
    assert row.split()[:2] == ["reviews", "0.1.0"]
    assert "OK:" in check.stdout
    fields = plugboard("check", "--root", str(project), "--fields", "reviews", env=env)
    assert "Query.reviewsHello" in fields.stdout.split(), fields.stdout + fields.stderr

    listed = plugboard("plugins", "--root", str(project), env=env)
    assert any(line.split()[:2] == ["reviews", "enabled"] and "plugboard-reviews" in line for line in listed.stdout.splitlines()), listed.stdout
    shown = plugboard("config", "--root", str(project), "reviews.greeting", env=env)
    assert "Howdy" in shown.stdout, shown.stdout + shown.stderr

    # Without the throwaway folder on the path the same project cannot start:
    # the plugin came from there, not from the shared venv.
    missing = plugboard("check", "--root", str(project))
    assert missing.returncode == 2
    assert "reviews" in missing.stderr


def test_nothing_was_installed_into_the_venv(installed_plugin):
    assert "reviews" not in {ep.name for ep in importlib.metadata.entry_points(group="plugboard.plugins")}
    assert importlib.util.find_spec("plugboard_reviews") is None
    listed = run([sys.executable, "-m", "pip", "list", "--disable-pip-version-check", "--format=freeze"])
    assert "plugboard-reviews" not in listed.stdout and "plugboard_reviews" not in listed.stdout
