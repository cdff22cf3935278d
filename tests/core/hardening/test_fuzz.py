"""Fuzzing the GraphQL endpoint like an attacker: no 5xx, no crashed handler.

A ``plugboard serve`` subprocess with the books example answers documents
that hypothesis-graphql generates from the composed schema (valid ones, and
invalid ones in its negative mode), arbitrary text, and arbitrary JSON bodies,
over POST and GET. Every answer must be below 500 and the server log must
hold no traceback. Bounded: a few hundred examples, well under 30 s.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
hypothesis_graphql = pytest.importorskip("hypothesis_graphql")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis_graphql import Mode  # noqa: E402

from plugboard import keys  # noqa: E402
from plugboard.app import create_app  # noqa: E402
from plugboard.settings import Settings  # noqa: E402

TOKEN = "fuzz-operator"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def composed_sdl(tmp_path: Path) -> str:
    """The composed schema, with Tartiflette's built-in scalars declared for graphql-core."""
    app = create_app(Settings.from_mapping({"plugins": ["books"], "server": {"data_dir": str(tmp_path / "sdl")}}, root=tmp_path))
    sdl = app[keys.COMPOSED_SCHEMA].sdl
    import graphql

    for _ in range(20):
        try:
            graphql.build_schema(sdl)
            return sdl
        except (graphql.GraphQLError, TypeError) as e:
            missing = re.findall(r"Unknown type '(\w+)'", str(e))
            if not missing:
                raise
            sdl = "".join(f"scalar {name}\n" for name in sorted(set(missing))) + sdl
    raise AssertionError("the composed SDL does not build in graphql-core")


class Served:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
        self.log = open(root / "server.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plugboard.cli", "serve", "--root", str(root), "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.text()
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                assert time.monotonic() < deadline, self.text()
                time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise

    def text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    settings_data = {"plugins": ["books"], "server": {"data_dir": str(root / "var"), "admin_token": TOKEN}}
    (root / "settings.yaml").write_text(yaml.safe_dump(settings_data))
    served = Served(root)
    served.sdl = composed_sdl(root)
    yield served
    log = served.text()
    served.stop()
    assert "Traceback" not in log and "Error handling request" not in log, log


HEADERS = {"Content-Type": "application/json", "Accept": "application/graphql-response+json", "Authorization": f"Bearer {TOKEN}"}


def post(server, document: str, variables=None) -> int:
    status, body = server.request("POST", "/graphql", json.dumps({"query": document, "variables": variables}).encode(), HEADERS)
    assert status < 500, (status, body[:500], document[:500])
    assert b"INTERNAL_SERVER_ERROR" not in body, (body[:500], document[:500])
    return status


def get(server, document: str) -> int:
    path = "/graphql?" + urlencode({"query": document})
    if len(path) > 8000:  # aiohttp's request-line limit: not what we fuzz
        return 0
    status, body = server.request("GET", path, None, {"Accept": "application/graphql-response+json", "graphql-require-preflight": "1"})
    assert status < 500, (status, body[:500], document[:500])
    return status


def test_valid_documents(server):
    @FUZZ
    @given(hypothesis_graphql.from_schema(server.sdl))
    def check(document):
        post(server, document)
        get(server, document)

    check()


def test_invalid_documents(server):
    @FUZZ
    @given(hypothesis_graphql.from_schema(server.sdl, mode=Mode.NEGATIVE))
    def check(document):
        post(server, document)
        get(server, document)

    check()


_TOKENS = st.sampled_from(["{", "}", "(", ")", "[", "]", "...", "@skip(if: true)", "$v", ":", "books", "author", "__schema", "__type", "a:", "fragment F on Book", "query", '"', '"""', "#", "1e999", "-0", "\\u0000", "on"])


def test_token_soup(server):
    @FUZZ
    @given(st.lists(_TOKENS, max_size=300).map(" ".join) | st.text(max_size=2000))
    def check(document):
        post(server, document)
        get(server, document)

    check()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=40,
)


def test_arbitrary_json_bodies_and_variables(server):
    @FUZZ
    @given(_JSON, _JSON)
    def check(body, variables):
        status, raw = server.request("POST", "/graphql", json.dumps(body).encode(), HEADERS)
        assert status < 500, (status, raw[:300])
        post(server, "query ($v: ID!, $n: Int) { book(id: $v) { id } books(first: $n) { id } }", {"v": variables, "n": variables})

    check()
