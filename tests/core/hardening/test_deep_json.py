"""Finding 6: deep JSON and odd numbers are the client's error (400 + JSON), never a 500.

The review sent 50,000 ``[`` as a body and as the ``variables`` of GET and
POST requests (RecursionError, a 500 and 33 log lines each), and expiry
times in non-ASCII digits or 5,000 digits to the file downloads (a 500).
The WebSocket half of this finding (close 4400) lives in the realtime
plugin and is not covered here.
"""

from __future__ import annotations

import json
import logging

import pytest

from core_testkit import echo_plugin
from hardening_kit import GRAPHQL_RESPONSE, error_code, while_responsive

ECHO = "query ($v: JSON) { echoJson(value: $v) }"


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app(plugins=[echo_plugin()]))


def nested(n: int) -> str:
    return "[" * n + "]" * n


def no_server_errors(caplog) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_body_of_50000_brackets(client, caplog):
    async def attack():
        resp = await client.post("/graphql", data="[" * 50_000, headers={"Content-Type": "application/json", "Accept": GRAPHQL_RESPONSE})
        return resp.status, await resp.json()

    (status, body), slowest = await while_responsive(client, attack)
    assert status == 400 and "nested too deeply" in body["errors"][0]["message"]
    assert slowest < 0.1
    no_server_errors(caplog)


@pytest.mark.parametrize("depth", [100, 50_000])
async def test_deep_variables_over_post(client, caplog, depth):
    raw = '{"query": %s, "variables": {"v": %s}}' % (json.dumps(ECHO), nested(depth))
    resp = await client.post("/graphql", data=raw, headers={"Content-Type": "application/json", "Accept": GRAPHQL_RESPONSE})
    body = await resp.json()
    assert resp.status == 400, body
    if depth == 100:
        assert error_code(body) == "VARIABLES_TOO_DEEP" and body["errors"][0]["extensions"]["limit"] == 32
    no_server_errors(caplog)


# 1,300 levels: past the recursion limit, within aiohttp's 8 KB request line.
@pytest.mark.parametrize("depth", [100, 1_300])
async def test_deep_variables_over_get(client, caplog, depth):
    params = {"query": ECHO, "variables": '{"v": %s}' % nested(depth)}
    resp = await client.get("/graphql", params=params, headers={"Accept": GRAPHQL_RESPONSE, "graphql-require-preflight": "1"})
    body = await resp.json()
    assert resp.status == 400, body
    no_server_errors(caplog)


async def test_deep_extensions(client):
    resp = await client.post("/graphql", json={"query": "{ __typename }", "extensions": {"x": json.loads(nested(40))}}, headers={"Accept": GRAPHQL_RESPONSE})
    assert (resp.status, error_code(await resp.json())) == (400, "VARIABLES_TOO_DEEP")


async def test_reasonable_variables_pass(client):
    resp = await client.post("/graphql", json={"query": ECHO, "variables": {"v": json.loads(nested(20))}})
    assert resp.status == 200 and (await resp.json())["data"]["echoJson"] == json.loads(nested(20))


@pytest.mark.parametrize("expires", ["١٢٣٤٥٦٧٨٩٠", "²", "9" * 5_000, "-1", "1e9", " 12"])
async def test_odd_expiry_times_on_file_downloads(client, caplog, expires):
    resp = await client.get("/files/uploads/a.txt", params={"expires": expires, "signature": "00"})
    assert resp.status == 400 and "error" in await resp.json()
    no_server_errors(caplog)


async def test_a_valid_but_unsigned_expiry_is_still_forbidden(client):
    resp = await client.get("/files/uploads/a.txt", params={"expires": "99999999999", "signature": "00"})
    assert resp.status == 403
