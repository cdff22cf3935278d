"""Finding 5: passwords inside URLs are masked wherever settings, errors or logs are shown.

``plugboard config`` printed ``records.url`` and ``redis.url`` with their
passwords. Now every URL with credentials reads ``user:***@host`` in
``config``, ``check``, settings errors, start-up failures and log lines.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plugboard.config import unstructure
from plugboard.core_config import CoreConfig
from plugboard.providers.records import RecordsConfig
from plugboard.providers.redis import RedisConfig
from plugboard.units import MaskURLsFilter, mask_url

PASSWORD = "hunter2"
PG = f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{{port}}/plugboard"
REDIS = f"redis://:{PASSWORD}@127.0.0.1:{{port}}/0"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "plugboard.cli", *args, "--root", str(root)], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


def project(tmp_path: Path, data: dict) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    data = {"plugins": [], **data}
    data.setdefault("server", {})["data_dir"] = str(tmp_path / "var")
    (root / "settings.yaml").write_text(yaml.safe_dump(data))
    return root


def test_config_masks_url_passwords(tmp_path):
    root = project(tmp_path, {"records": {"url": PG.format(port=1)}})
    proc = run(root, "config", env={"REDIS_URL": REDIS.format(port=1)})
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert "app:***@127.0.0.1:1/plugboard" in rows["records.url"]
    assert ":***@127.0.0.1:1/0" in rows["redis.url"]


def test_settings_errors_mask_url_passwords(tmp_path):
    root = project(tmp_path, {"records": {"pool_size": PG.format(port=1)}, "redis": {"url": ["not", REDIS.format(port=1)]}})
    for command in ("check", "config"):
        proc = run(root, command)
        assert proc.returncode != 0
        assert "records.pool_size" in proc.stderr and "app:***@" in proc.stderr, proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize("section, url", [("redis", REDIS), ("records", PG)])
def test_connection_failures_at_start_up_mask_the_password(tmp_path, section, url):
    port = closed_port()
    root = project(tmp_path, {section: {"url": url.format(port=port)}, "server": {"port": closed_port()}})
    proc = run(root, "serve", env={"PLUGBOARD_LOG_LEVEL": "DEBUG"})
    assert proc.returncode != 0
    assert f":***@127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


def test_log_records_are_masked():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskURLsFilter())
    logger = logging.getLogger("plugboard.test.masking")
    logger.addHandler(handler)
    try:
        logger.error("cannot reach %s", REDIS.format(port=6379))
        try:
            raise ConnectionError(f"connect to {PG.format(port=5432)} refused")
        except ConnectionError:
            logger.exception("records down")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert PASSWORD not in text and "redis://:***@127.0.0.1:6379/0" in text and "app:***@127.0.0.1:5432" in text


def test_unstructure_masks_urls():
    config = CoreConfig(records=RecordsConfig(url=PG.format(port=1)), redis=RedisConfig(url=REDIS.format(port=1)))
    shown = unstructure(config, mask=True)
    assert PASSWORD not in repr(shown)
    assert unstructure(config)["records"]["url"] == PG.format(port=1)  # only when asked


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("rediss://u:p@ss@host:1/0?ssl=1", "rediss://u:***@host:1/0?ssl=1"),
        ("unix:///tmp/redis.sock?password=pw&db=2", "unix:///tmp/redis.sock?password=***&db=2"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked
