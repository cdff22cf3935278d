"""Start-up time of ``plugboard serve`` until ``/readyz`` answers 200.

Every built-in plugin that exists plus the books example, on the embedded
defaults. The baseline in the same run is a bare ``python -c "import aiohttp,
tartiflette"`` process: what any server on this stack pays before its own work.
Target: under 1.5 s.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from versions import print_report  # bench/versions.py: the script's folder is on sys.path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(root: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING"),
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("server exited")
                time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def bare_imports() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import aiohttp, tartiflette, sqlalchemy"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print_report(["SQLAlchemy", "aiosqlite", "plugboard-books"])
    plugins = sorted(ep.name for ep in entry_points(group="plugboard.plugins") if ep.dist and ep.dist.name == "plugboard")
    plugins.append("books")
    root = Path(tempfile.mkdtemp(prefix="plugboard-startup-"))
    (root / "settings.yaml").write_text(json.dumps({"plugins": plugins, "server": {"data_dir": "var"}}))
    try:
        once(root)  # creates the database: later runs measure a normal restart
        serve = [once(root) for _ in range(args.runs)]
        bare = [bare_imports() for _ in range(args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"plugins: {', '.join(plugins)}")
    print("| what | median | max |")
    print("|---|---|---|")
    print(f"| bare `import aiohttp, tartiflette, sqlalchemy` | {statistics.median(bare):.2f} s | {max(bare):.2f} s |")
    print(f"| `plugboard serve` to ready /readyz | {statistics.median(serve):.2f} s | {max(serve):.2f} s |")
    print(f"\nstart-up median {statistics.median(serve):.2f} s (target < 1.5 s), {statistics.median(serve) / statistics.median(bare):.1f}x the bare imports")


if __name__ == "__main__":
    main()
