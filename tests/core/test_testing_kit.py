"""The plugin test kit (``plugboard.testing``) itself: every fixture really serves.

Used exactly as a third-party plugin's tests use it: by fixture name, with no
import from our conftest files.
"""

from __future__ import annotations

import asyncio
import types

import pytest

from plugboard import hookimpl, keys
from plugboard.testing import (
    LegacyWS,
    PlugboardProcess,
    TransportWS,
    clean_env,
    eventually,
    free_port,
    gql,
    subscribe,
    write_project,
)

COUNTDOWN = "subscription($n: Int!) { countdown(from: $n) }"


def kit_plugin() -> types.SimpleNamespace:
    """A query and a subscription, as a plugin object passed with ``plugins=[...]``."""

    async def hello(parent, args, context, info):
        return f"hello {args.get('name') or 'world'} as {context.identity}"

    async def countdown(parent, args, context, info):
        for n in range(args["from"], -1, -1):
            yield {"countdown": n}

    async def me(parent, args, context, info):
        yield {"me": context.identity}

    def context_hook(context, request, connection_params):
        auth = request.headers.get("Authorization", "") if request is not None else ""
        token = auth[7:] if auth.startswith("Bearer ") else (connection_params or {}).get("authToken")
        return {"identity": token} if token else None

    plugin = types.SimpleNamespace(plugboard_name="kit", __name__="kit")
    plugin.plugboard_schema = hookimpl(
        lambda: "extend type Query { hello(name: String): String! }\nextend type Subscription { countdown(from: Int!): Int! me: String }"
    )
    plugin.plugboard_resolvers = hookimpl(lambda: {"Query.hello": hello})
    plugin.plugboard_subscriptions = hookimpl(lambda: {"Subscription.countdown": countdown, "Subscription.me": me})
    plugin.plugboard_context = hookimpl(context_hook)
    return plugin


REALTIME = {
    "plugins": ["realtime"],
    "realtime": {"channels": {"enabled": False}, "features": {"presence": False, "chat": False, "notifications": False}},
}


# -- apps and the HTTP client ------------------------------------------------------


def test_plugboard_app_builds_separate_apps_from_overrides(plugboard_app, tmp_path):
    one = plugboard_app({"graphql": {"max_files": 3}})
    two = plugboard_app(plugins=[kit_plugin()])
    assert one is not two
    assert one[keys.SETTINGS].get("graphql.max_files") == 3
    assert str(one[keys.SETTINGS].get("server.data_dir")).startswith(str(tmp_path))


async def test_gql_returns_the_json_and_sends_variables_and_headers(plugboard_client):
    client = await plugboard_client(plugins=[kit_plugin()])
    query = "query($name: String) { hello(name: $name) }"
    assert await client.gql(query, variables={"name": "Ada"}, headers={"Authorization": "Bearer ann"}) == {
        "data": {"hello": "hello Ada as ann"}
    }
    assert await client.gql_data(query, token="bob") == {"hello": "hello world as bob"}
    # Errors are returned, not raised; the status is checked.
    result = await client.gql("{ nope }", status=None)
    assert result["errors"][0]["message"]
    with pytest.raises(AssertionError, match="HTTP"):
        await client.gql("{ nope }", status=400)
    with pytest.raises(AssertionError, match="errors"):
        await client.gql_data("{ nope }", status=None)


async def test_plugboard_client_takes_an_app_and_closes_it(plugboard_app, plugboard_client):
    app = plugboard_app(plugins=[kit_plugin()])
    client = await plugboard_client(app)
    assert client.app is app
    assert await gql(client, "{ plugboardVersion }") == {"data": {"plugboardVersion": "0.1.0"}}


# -- WebSocket and SSE clients against a real app ------------------------------------


async def test_graphql_transport_ws_client(plugboard_client):
    client = await plugboard_client(REALTIME, plugins=[kit_plugin()])
    async with await client.ws({"authToken": "alice"}) as ws:
        assert isinstance(ws, TransportWS) and ws.ws.protocol == "graphql-transport-ws"
        assert await ws.execute(COUNTDOWN, {"n": 1}) == [{"data": {"countdown": 1}}, {"data": {"countdown": 0}}]
        assert await ws.execute("{ hello }", op_id="q") == [{"data": {"hello": "hello world as alice"}}]
        await ws.subscribe("2", "{ nope }")
        [error] = await ws.until_complete("2")
        assert error["type"] == "error"
        await ws.send({"type": "subscribe"})  # no id: the server closes with 4400
        code, _ = await ws.closed()
        assert code == 4400


async def test_legacy_ws_client(plugboard_client):
    client = await plugboard_client(REALTIME, plugins=[kit_plugin()])
    ws = await LegacyWS.connect(client, {"authToken": "bob"})
    assert ws.ws.protocol == "graphql-ws"
    assert await ws.execute(COUNTDOWN, {"n": 1}) == [{"data": {"countdown": 1}}, {"data": {"countdown": 0}}]
    await ws.start("q", "{ hello }")
    assert await ws.until_complete("q") == [
        {"id": "q", "type": "data", "payload": {"data": {"hello": "hello world as bob"}}},
        {"id": "q", "type": "complete"},
    ]
    await ws.close()


async def test_sse_client_distinct_connections(plugboard_client):
    client = await plugboard_client(REALTIME, plugins=[kit_plugin()])
    async with await client.sse(COUNTDOWN, {"n": 2}) as stream:
        assert await stream.next() == {"data": {"countdown": 2}}
        assert await stream.until_complete() == [
            ("next", {"data": {"countdown": 1}}),
            ("next", {"data": {"countdown": 0}}),
            ("complete", ""),
        ]
        assert await stream.ended()


async def test_subscribe_runs_an_operation_in_process(plugboard_client):
    client = await plugboard_client(plugins=[kit_plugin()])
    stream = await subscribe(client.app, COUNTDOWN, {"n": 1})
    assert [result async for result in stream] == [{"data": {"countdown": 1}}, {"data": {"countdown": 0}}]
    stream = await subscribe(client.app, "subscription { me }", connection_params={"authToken": "zoe"})
    assert await anext(stream) == {"data": {"me": "zoe"}}
    await stream.aclose()


# -- polling ---------------------------------------------------------------------------


async def test_eventually_returns_the_value_or_fails_in_time():
    box: list[int] = []
    asyncio.get_running_loop().call_later(0.05, box.append, 7)
    assert await eventually(lambda: box) == [7]

    async def async_check():
        return len(box)

    assert await eventually(async_check) == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError, match="never true"):
        await eventually(lambda: False, timeout=0.1, what="never true")
    assert loop.time() - started < 2


# -- plugboard serve in a subprocess -------------------------------------------------------


async def test_plugboard_serve_runs_settings_and_keeps_the_output(plugboard_serve, tmp_path):
    import aiohttp

    server = plugboard_serve({"plugins": ["books"], "server": {"admin_token": "op"}})
    assert server.proc.poll() is None and server.url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession(base_url=server.url) as session:
        data = await gql(session, 'mutation { createBook(input: {title: "Dune", authorName: "Frank Herbert"}) { title } }', token="op")
        assert data == {"data": {"createBook": {"title": "Dune"}}}
    assert (tmp_path / "project-0" / "var" / "plugboard.db").exists()
    assert server.stop() == 0
    server.close()
    assert server.output() == server.output()  # kept after the log is gone


def test_plugboard_process_reports_a_failed_start(tmp_path):
    project = write_project(tmp_path / "proj", {"server": {"port": "eighty"}})
    with PlugboardProcess.serve(project) as server:
        with pytest.raises(AssertionError, match="server.port = 'eighty'"):
            server.wait_ready()
    assert server.proc.returncode == 2


def test_clean_env_drops_settings_variables(monkeypatch):
    monkeypatch.setenv("PLUGBOARD_SERVER__PORT", "1")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere")
    monkeypatch.setenv("QUEUE_DASHBOARD", "true")
    env = clean_env({"EXTRA": "1"}, drop=["QUEUE_DASHBOARD"], pythonpath=["/x"])
    assert "PLUGBOARD_SERVER__PORT" not in env and "REDIS_URL" not in env and "QUEUE_DASHBOARD" not in env
    assert env["EXTRA"] == "1" and env["PYTHONPATH"].split(":")[0] == "/x"


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- real servers ------------------------------------------------------------------------


async def test_redis_url_serves_and_starts_empty(redis_url):
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set("kit", "yes")
        assert await client.get("kit") == b"yes"
    finally:
        await client.aclose()


async def test_postgres_url_is_an_empty_database_of_its_own(postgres_url, postgres_server):
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    assert postgres_url != postgres_server.url
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE kit (n int)"))
            await conn.execute(sa.text("INSERT INTO kit VALUES (42)"))
            assert (await conn.execute(sa.text("SELECT n FROM kit"))).scalar() == 42
    finally:
        await engine.dispose()


async def test_smtp_server_receives_mail_sent_with_aiosmtplib(smtp_server):
    from email.message import EmailMessage

    import aiosmtplib

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Kit"
    message.set_content("Hello from the kit")
    await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port, start_tls=False)
    [got] = smtp_server.messages
    assert got.mail_from == "a@example.com" and got.rcpt_tos == ["b@example.com"]
    assert got.message["Subject"] == "Kit" and got.message.get_content().strip() == "Hello from the kit"

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port, recipients=["reject@example.com"], start_tls=False)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port, recipients=["busy@example.com"], start_tls=False)
    assert info.value.recipients[0].code == 451
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("round", [1, 2])
async def test_s3_server_puts_and_gets_with_aiobotocore(s3_server, round):
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_server.client_kwargs()) as s3:
        # Empty for every test: the second round sees no bucket from the first.
        assert (await s3.list_buckets())["Buckets"] == []
        await s3.create_bucket(Bucket="kit")
        await s3.put_object(Bucket="kit", Key="a/b.txt", Body=b"hello", ContentType="text/plain")
        got = await s3.get_object(Bucket="kit", Key="a/b.txt")
        async with got["Body"] as body:
            assert await body.read() == b"hello"
        assert got["ContentType"] == "text/plain"


def test_a_timed_out_test_reports_its_asyncio_tasks(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_hangs.py").write_text(
        "import asyncio\n"
        "async def parked_forever():\n"
        "    await asyncio.get_running_loop().create_future()\n"
        "async def test_hangs():\n"
        "    await asyncio.create_task(parked_forever(), name='the-parked-one')\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\ntimeout = 2\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hangs.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert "Timeout (>2.0s) from pytest-timeout" in run.stdout
    report = run.stdout.split("asyncio tasks at the timeout", 1)[1]
    assert "name='the-parked-one'" in report and "in parked_forever" in report
