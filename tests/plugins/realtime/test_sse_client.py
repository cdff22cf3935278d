"""Issue 10 (3): graphql-sse's own client (npm ``graphql-sse`` 2.6.1) against both paths and modes.

The client is the UMD build vendored for GraphiQL
(``core/transports/static/graphiql/graphql-sse-2.6.1.min.js``), run by Node:
what a browser or a Node app using graphql-sse sends, not an imitation. It
serves ``<graphql.path>/stream`` (graphql-sse's own default path) and the
GraphQL path itself, in distinct and single connection modes; a subscription
that does not validate is a ``next`` carrying ``errors``, then ``complete``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import types
from pathlib import Path

import pytest

from plugboard import hookimpl

ROOT = Path(__file__).resolve().parents[3]
CLIENT_JS = ROOT / "core" / "transports" / "static" / "graphiql" / "graphql-sse-2.6.1.min.js"

# Runs one operation with graphql-sse's createClient; prints what the sink saw as JSON.
RUNNER = r"""
// node -e: process.argv is [node, ...arguments]
const { createClient } = require(process.argv[1]);
const [url, single, query] = [process.argv[2], process.argv[3] === "single", process.argv[4]];
const client = createClient({ url, singleConnection: single, retryAttempts: 0 });
const seen = [];
client.subscribe({ query }, {
  next: (value) => seen.push(value),
  error: (err) => { console.log(JSON.stringify({ seen, error: String(err && (err.message || err)) })); client.dispose(); },
  complete: () => { console.log(JSON.stringify({ seen, complete: true })); client.dispose(); },
});
"""


def _plugin():
    @hookimpl
    def plugboard_schema():
        return "extend type Query { greeting: String } extend type Subscription { countdown(from: Int!): Int }"

    @hookimpl
    def plugboard_resolvers():
        async def greeting(parent, args, context, info):
            return "hello"

        return {"Query.greeting": greeting}

    @hookimpl
    def plugboard_subscriptions():
        async def countdown(parent, args, context, info):
            for i in range(args["from"], 0, -1):
                yield {"countdown": i}

        return {"Subscription.countdown": countdown}

    return types.SimpleNamespace(
        plugboard_schema=plugboard_schema, plugboard_resolvers=plugboard_resolvers, plugboard_subscriptions=plugboard_subscriptions
    )


@pytest.fixture
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed (apt-get install -y nodejs); the graphql-sse client test needs it")
    return path


async def run_client(node: str, url: str, query: str, *, single: bool = False) -> dict:
    proc = await asyncio.create_subprocess_exec(
        node, "-e", RUNNER, str(CLIENT_JS), url, "single" if single else "distinct", query,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.fixture
async def client(plugboard_client):
    return await plugboard_client({"plugins": ["realtime"]}, plugins=[_plugin()])


@pytest.mark.parametrize("single", [False, True], ids=["distinct", "single"])
@pytest.mark.parametrize("path", ["/graphql/stream", "/graphql"])
async def test_graphql_sse_client_subscribes(client, node, path, single):
    result = await run_client(node, str(client.make_url(path)), "subscription { countdown(from: 3) }", single=single)
    assert result == {"seen": [{"data": {"countdown": n}} for n in (3, 2, 1)], "complete": True}


@pytest.mark.parametrize("single", [False, True], ids=["distinct", "single"])
async def test_graphql_sse_client_runs_queries_on_the_stream_path(client, node, single):
    result = await run_client(node, str(client.make_url("/graphql/stream")), "{ greeting }", single=single)
    assert result == {"seen": [{"data": {"greeting": "hello"}}], "complete": True}


@pytest.mark.parametrize("path", ["/graphql/stream", "/graphql"])
async def test_invalid_subscription_is_a_next_with_errors_then_complete(client, node, path):
    result = await run_client(node, str(client.make_url(path)), "subscription { countdown(from: 3) nope }")
    assert result["complete"] is True, result
    [value] = result["seen"]
    assert "data" not in value and "nope" in value["errors"][0]["message"], value
    assert all("path" not in e and e["locations"] for e in value["errors"]), value


async def test_invalid_subscription_on_the_wire(client):
    resp = await client.post("/graphql/stream", json={"query": "subscription { nope }"}, headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    text = await resp.text()
    events = [block for block in text.split("\n\n") if block.strip() and not block.startswith(":")]
    assert events[0].startswith("event: next\ndata: ") and '"errors"' in events[0] and '"data"' not in events[0], text
    assert events[1].startswith("event: complete"), text


@pytest.mark.parametrize(
    "raw, message",
    [("{not json", "not valid JSON"), ("{}", "'query' is missing"), ('{"query": 42}', "'query' must be a string")],
)
async def test_malformed_body_on_the_stream_path_is_400(client, raw, message):
    resp = await client.post("/graphql/stream", data=raw, headers={"Accept": "text/event-stream", "Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert message in (await resp.json())["errors"][0]["message"]


async def test_the_stream_path_is_configurable(plugboard_client, node):
    client = await plugboard_client({"plugins": ["realtime"], "realtime": {"sse": {"path": "/sse"}}}, plugins=[_plugin()])
    result = await run_client(node, str(client.make_url("/sse")), "subscription { countdown(from: 1) }")
    assert result == {"seen": [{"data": {"countdown": 1}}], "complete": True}
    assert (await client.post("/graphql/stream", json={"query": "{ greeting }"})).status in (404, 405)


async def test_a_custom_graphql_path_moves_the_stream_path(plugboard_client, node):
    client = await plugboard_client({"plugins": ["realtime"], "graphql": {"path": "/api"}}, plugins=[_plugin()])
    result = await run_client(node, str(client.make_url("/api/stream")), "subscription { countdown(from: 1) }", single=True)
    assert result == {"seen": [{"data": {"countdown": 1}}], "complete": True}


async def test_server_sent_events_off_serves_no_stream_path(plugboard_client):
    client = await plugboard_client({"plugins": ["realtime"], "realtime": {"server_sent_events": False}}, plugins=[_plugin()])
    resp = await client.post("/graphql/stream", json={"query": "{ greeting }"}, headers={"Accept": "text/event-stream"})
    assert resp.status == 404
