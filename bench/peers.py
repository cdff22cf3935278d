"""Plugboard against its peers, uncached: one command, one run, five servers.

Servers, each pinned to CPU 0 and loaded by wrk pinned to CPU 1 (POST JSON,
64 connections), all serving the same in-memory schema and data
(bench/peers/schema.graphql, library.py, server.mjs):

- Plugboard with every built-in plugin, ``graphql.executor: planned``;
- the same with ``graphql.executor: tartiflette``;
- bare Tartiflette behind a minimal aiohttp handler (tuned as Plugboard is);
- Apollo Server 5 and GraphQL Yoga 5 on Node (npm packages installed here
  from bench/peers/package-lock.json on first run, as wrk is installed).

Two queries: ``books`` (the books query of bench/http_books.py) and ``deep``
(fragments, an interface and a union, variables, a custom scalar and an
enum; about 500 fields). Rounds alternate the servers so drift on a shared
machine hits all of them; medians are kept and the ratios are what count.

    python bench/peers.py [--duration 10] [--rounds 3] [--connections 64] [--servers ...] [--queries ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

from http_books import free_port, post, start, stop, wait_ready  # bench/: the script's folder is on sys.path
from versions import print_report

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
PYTHON = sys.executable

QUERIES = {
    "books": ("{ books(first: 20) { id title author { id name } } }", None),
    "deep": (
        """query Deep($term: String!, $n: Int!, $id: ID!) {
  search(term: $term, first: $n) {
    __typename
    ... on Book { ...BookFields }
    ... on Author { id name books { ...BookFields } }
  }
  node(id: $id) { id ... on Author { name } ... on Book { title price } }
}
fragment BookFields on Book { id title year price kind author { id name } }""",
        {"term": "a", "n": 10, "id": "a3"},
    ),
}
SERVERS = ("plugboard-planned", "plugboard-tartiflette", "bare-tartiflette", "apollo", "yoga")


def builtin_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="plugboard.plugins") if ep.dist and ep.dist.name == "plugboard")


def node_versions() -> dict[str, str]:
    out = {"node": subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()}
    for package in ("@apollo/server", "graphql-yoga", "graphql"):
        meta = json.loads((PEERS / "node_modules" / package / "package.json").read_text())
        out[package] = meta["version"]
    return out


def ensure_node_modules() -> None:
    if not shutil.which("node") or not shutil.which("npm"):
        sys.exit("Node 20 and npm are needed for the Apollo Server and Yoga peers")
    if not (PEERS / "node_modules" / "@apollo" / "server").exists() or not (PEERS / "node_modules" / "graphql-yoga").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS, check=True)


def wrk(url: str, duration: int, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for name, pct in (("p50", "50%"), ("p99", "99%")):
        m = re.search(rf"{pct}\s+([\d.]+)(us|ms|s)\b", out)
        result[name] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return result


def server_command(name: str, root: Path, port: int) -> tuple[list[str], str | None]:
    """The command, and the URL to poll until ready (None: poll with a query)."""
    if name.startswith("plugboard-"):
        project = root / name
        return [PYTHON, "-m", "plugboard.cli", "serve", "--root", str(project), "--port", str(port)], f"http://127.0.0.1:{port}/readyz"
    if name == "bare-tartiflette":
        return [PYTHON, str(PEERS / "bare_tartiflette.py"), "--port", str(port)], None
    return ["node", str(PEERS / "server.mjs"), name, str(port)], None


def write_projects(root: Path) -> None:
    plugins = builtin_plugins()
    for executor in ("planned", "tartiflette"):
        project = root / f"plugboard-{executor}"
        project.mkdir()
        settings = {
            "plugins": [*plugins, "library"],
            "server": {"data_dir": "var"},
            "graphql": {"executor": executor},
        }
        # Uncached execution, and one client address sending every
        # connection: bench/cache.py and bench/protection.py measure those.
        if "cache" in plugins:
            settings["cache"] = {"queryCache": {"enabled": False}}
        if "protection" in plugins:
            settings["protection"] = {"requests": {"enabled": False}}
        (project / "settings.yaml").write_text(json.dumps(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--queries", default=",".join(QUERIES))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    servers = args.servers.split(",")
    queries = args.queries.split(",")
    if any(s in ("apollo", "yoga") for s in servers):
        ensure_node_modules()
        print("node:", json.dumps(node_versions()))
    print_report(["uvloop"])
    print("wrk:", subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0:1], flush=True)

    root = Path(tempfile.mkdtemp(prefix="plugboard-peers-"))
    write_projects(root)
    scripts = {}
    for name, (query, variables) in QUERIES.items():
        scripts[name] = root / f"{name}.lua"
        body = json.dumps({"query": query, "variables": variables})
        scripts[name].write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n')
    env = dict(os.environ, PLUGBOARD_LOG_LEVEL="WARNING", PYTHONPATH=os.pathsep.join([str(PEERS), os.environ.get("PYTHONPATH", "")]))
    env["NODE_ENV"] = "production"
    results: dict[str, dict[str, list[dict[str, float]]]] = {q: {s: [] for s in servers} for q in queries}
    answers: dict[str, dict[str, str]] = {q: {} for q in queries}
    try:
        for _ in range(args.rounds):
            for name in servers:
                port = free_port()
                cmd, ready = server_command(name, root, port)
                proc = start(cmd, "0", env)
                try:
                    url = f"http://127.0.0.1:{port}/graphql"
                    if ready:
                        wait_ready(ready)
                    else:
                        _wait_post(url)
                    for qname in queries:
                        query, variables = QUERIES[qname]
                        answer = post(url, query, variables)
                        assert "errors" not in answer, (name, answer)
                        answers[qname][name] = json.dumps(answer["data"], sort_keys=True)
                        wrk(url, 2, args.connections, scripts[qname])  # warm-up
                        results[qname][name].append(wrk(url, args.duration, args.connections, scripts[qname]))
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for qname in queries:
        distinct = set(answers[qname].values())
        print(f"\n## {qname}: every server gave the same data: {len(distinct) == 1}")
        med = {
            s: {k: statistics.median(r[k] for r in results[qname][s]) for k in ("rps", "p50", "p99")} for s in servers
        }
        base = med.get("plugboard-tartiflette")
        apollo = med.get("apollo")
        print("| server | req/s | p50 ms | p99 ms | vs Plugboard (tartiflette executor) | vs Apollo |")
        print("|---|---|---|---|---|---|")
        for s in servers:
            m = med[s]
            vs_base = f"{m['rps'] / base['rps']:.2f}x" if base else "-"
            vs_apollo = f"{m['rps'] / apollo['rps']:.2f}x" if apollo else "-"
            print(f"| {s} | {m['rps']:.0f} | {m['p50']:.1f} | {m['p99']:.1f} | {vs_base} | {vs_apollo} |")
    print("\nraw:", json.dumps(results))


def _wait_post(url: str, timeout: float = 30.0) -> None:
    import time

    start_t = time.perf_counter()
    while time.perf_counter() - start_t < timeout:
        try:
            post(url, "{ __typename }")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


if __name__ == "__main__":
    main()
