"""Issue 10 (6): ``plugboard init --features``, interactive init, pip extras and the install hint naming them."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plugboard.errors import ProviderError
from plugboard.pluginmanager import installed_plugins
from plugboard.providers.registry import ProviderRegistry, ProviderSpec, install_hint
from plugboard.scaffold.features import FEATURES
from plugboard.testing import clean_env

PLUGBOARD = [sys.executable, "-m", "plugboard.cli"]
ALL = "uploads,email,jobs,cache,protection,realtime"
SEED_ENV = {
    "uploads": ["UPLOAD_PROVIDER", "AWS_S3_BUCKET", "AWS_S3_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CLOUDINARY_URL"],
    "email": ["EMAIL_PROVIDER", "SENDGRID_API_KEY", "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASS"],
    "jobs": ["REDIS_URL", "QUEUE_CONCURRENCY", "QUEUE_DASHBOARD"],
    "protection": ["RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_MAX", "RATE_LIMIT_SKIP_FAILED_REQUESTS"],
}


def plugins_of(features: str) -> tuple[list[str], list[str]]:
    """The chosen features' plugins: (installed, in order; not installed)."""
    installed = set(installed_plugins())
    plugins = [FEATURES[name.strip()].plugin for name in features.split(",")]
    return [p for p in plugins if p in installed], [p for p in plugins if p not in installed]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PLUGBOARD, *args], capture_output=True, text=True, timeout=120, env=clean_env(), cwd=cwd, stdin=subprocess.DEVNULL)


def env_names(text: str) -> list[str]:
    return [line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]


def test_init_with_every_feature(tmp_path):
    root = tmp_path / "proj"
    proc = run("init", str(root), "--features", ALL)
    assert proc.returncode == 0, proc.stderr
    settings_text = (root / "settings.yaml").read_text()
    settings = yaml.safe_load(settings_text)
    # Installed plugins are declared; the others are there, commented out, saying why.
    declared, missing = plugins_of(ALL)
    assert settings["plugins"] == declared
    for plugin in missing:
        assert f"# - {plugin}" in settings_text and f"install the plugin providing '{plugin}'" in settings_text
    # Each feature's commented defaults, once.
    for plugin in declared + missing:
        sections = [line for line in settings_text.splitlines() if line in (f"# {plugin}:", f"{plugin}:")]
        assert len(sections) == 1, (plugin, sections)
    assert "#   sse: {keepalive: 15s" in settings_text
    # The seed's variables, each once, grouped by feature.
    env = (root / ".env.example").read_text()
    names = env_names(env)
    assert names == list(dict.fromkeys(n for f in SEED_ENV.values() for n in f))
    assert "UPLOAD_PROVIDER=s3" in env and "RATE_LIMIT_MAX=100" in env
    assert "pip install 'plugboard[email,gcs,images,s3]'" in proc.stdout
    # The project runs as written.
    check = run("check", "--root", str(root))
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[2].startswith("core") and "jobs" in check.stdout and "realtime" in check.stdout


def test_init_with_some_features_writes_only_theirs(tmp_path):
    root = tmp_path / "proj"
    proc = run("init", str(root), "--features", "realtime, protection,realtime")
    assert proc.returncode == 0, proc.stderr
    text = (root / "settings.yaml").read_text()
    declared, missing = plugins_of("realtime,protection")
    assert yaml.safe_load(text)["plugins"] == declared
    for plugin in missing:
        assert f"# - {plugin}" in text
    assert env_names((root / ".env.example").read_text()) == ["REDIS_URL", "RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_MAX", "RATE_LIMIT_SKIP_FAILED_REQUESTS"]


@pytest.mark.parametrize("features", ["uploads,bogus", "nope", "uploads, Realtime ,rate"])
def test_unknown_feature_lists_the_known_ones_and_exits_2(tmp_path, features):
    root = tmp_path / "proj"
    proc = run("init", str(root), "--features", features)
    if features == "uploads, Realtime ,rate":
        assert "'rate'" in proc.stderr
    assert proc.returncode == 2
    assert "unknown feature" in proc.stderr and f"known features: {', '.join(FEATURES)}" in proc.stderr
    assert not root.exists()


def test_without_features_and_without_a_terminal_nothing_is_asked(tmp_path):
    proc = run("init", str(tmp_path / "proj"))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((tmp_path / "proj" / "settings.yaml").read_text())["plugins"] == []
    assert not (tmp_path / "proj" / ".env.example").exists()


def _run_in_terminal(args: list[str], answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run with stdin/stdout on a pseudo-terminal; type ``answer`` once the prompt shows."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(args, stdin=secondary, stdout=secondary, stderr=secondary, env=clean_env(), close_fds=True)
    os.close(secondary)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and b"empty for none:" in out:
                os.write(primary, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()


def test_init_asks_when_stdin_is_a_terminal(tmp_path):
    root = tmp_path / "proj"
    code, out = _run_in_terminal([*PLUGBOARD, "init", str(root)], "realtime,email")
    assert code == 0, out
    assert "uploads" in out and "protection" in out  # the choices were listed
    text = (root / "settings.yaml").read_text()
    assert yaml.safe_load(text)["plugins"] == plugins_of("realtime,email")[0] == ["realtime", "email"]
    assert "SMTP_HOST=smtp.gmail.com" in (root / ".env.example").read_text()


def test_an_unknown_answer_in_the_terminal_exits_2(tmp_path):
    code, out = _run_in_terminal([*PLUGBOARD, "init", str(tmp_path / "proj")], "realtime,bogus")
    assert code == 2 and "known features" in out
    assert not (tmp_path / "proj").exists()


@pytest.mark.parametrize(
    "requires, extra",
    [("aiobotocore", "s3"), ("gcloud-aio-storage>=9", "gcs"), ("Pillow", "images"), ("dkimpy", "email"), ("email_validator", "email")],
)
def test_install_hint_names_the_extra(requires, extra):
    assert install_hint(requires) == f"pip install 'plugboard[{extra}]' (or: pip install {requires})"


def test_install_hint_without_an_extra():
    assert install_hint("taskiq-redis") == "pip install taskiq-redis"


def test_a_provider_that_cannot_be_imported_names_the_extra():
    registry = ProviderRegistry()
    registry.add(ProviderSpec(kind="storage", name="s3x", factory="plugboard_no_such_module_s3:Storage", requires="aiobotocore>=2.9"), "uploads")
    with pytest.raises(ProviderError) as e:
        registry.load_factory(registry.spec("storage", "s3x"))
    assert "install it with: pip install 'plugboard[s3]'" in str(e.value)


def test_pyproject_declares_the_extras():
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    assert {"s3", "gcs", "images", "email", "all"} <= set(extras)
    assert extras["all"] == ["plugboard[s3,gcs,images,email,ses,cache-aws]"]
