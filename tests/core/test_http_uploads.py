"""Multipart requests through the GraphQL endpoint: uploads reach resolvers as Upload objects."""

from __future__ import annotations

import json

import aiohttp
import pytest

from core_testkit import echo_plugin

PREFLIGHT = {"apollo-require-preflight": "true", "Accept": "application/graphql-response+json"}


def form(operations, mapping, files):
    data = aiohttp.FormData(default_to_multipart=True)
    data.add_field("operations", json.dumps(operations))
    data.add_field("map", json.dumps(mapping))
    for name, (filename, content, ctype) in files.items():
        data.add_field(name, content, filename=filename, content_type=ctype)
    return data


@pytest.fixture
async def client(make_app, aiohttp_client):
    return await aiohttp_client(make_app({"graphql": {"max_file_size": "1KB", "max_files": 2}}, plugins=[echo_plugin()]))


async def test_single_upload(client):
    data = form(
        {"query": "mutation($f: Upload!) { upload(file: $f) { filename mimetype size text } }", "variables": {"f": None}},
        {"0": ["variables.f"]},
        {"0": ("a.txt", b"hello file", "text/plain")},
    )
    resp = await client.post("/graphql", data=data, headers=PREFLIGHT)
    assert resp.status == 200, await resp.text()
    assert await resp.json(content_type=None) == {
        "data": {"upload": {"filename": "a.txt", "mimetype": "text/plain", "size": 10, "text": "hello file"}}
    }


async def test_file_list(client):
    data = form(
        {"query": "mutation($fs: [Upload!]!) { uploads(files: $fs) { filename text } }", "variables": {"fs": [None, None]}},
        {"0": ["variables.fs.0"], "1": ["variables.fs.1"]},
        {"0": ("a.txt", b"one", "text/plain"), "1": ("b.txt", b"two", "text/plain")},
    )
    resp = await client.post("/graphql", data=data, headers=PREFLIGHT)
    assert (await resp.json(content_type=None))["data"]["uploads"] == [
        {"filename": "a.txt", "text": "one"},
        {"filename": "b.txt", "text": "two"},
    ]


async def test_multipart_without_preflight_header_is_blocked(client):
    data = form({"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}}, {"0": ["variables.f"]}, {"0": ("a", b"x", "text/plain")})
    resp = await client.post("/graphql", data=data)
    assert resp.status == 400
    assert "Cross-Site Request Forgery" in (await resp.json(content_type=None))["errors"][0]["message"]


@pytest.mark.parametrize(
    "operations, mapping, files, status, message",
    [
        ("{bad json", {"0": ["variables.f"]}, {"0": ("a", b"x", "text/plain")}, 400, "operations"),
        ({"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}}, {"0": ["variables.f"]}, {}, 400, "missing"),
        ({"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}}, {"0": ["variables.nope"]}, {"0": ("a", b"x", "text/plain")}, 400, "variables.nope"),
        ({"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}}, {"0": ["variables.f"]}, {"0": ("a", b"x" * 2048, "text/plain")}, 413, "1024"),
        ({"query": "mutation($fs: [Upload!]!) { uploads(files: $fs) { size } }", "variables": {"fs": [None, None, None]}}, {"0": ["variables.fs.0"], "1": ["variables.fs.1"], "2": ["variables.fs.2"]}, {"0": ("a", b"x", "t/p"), "1": ("b", b"y", "t/p"), "2": ("c", b"z", "t/p")}, 413, "files"),
    ],
)
async def test_bad_multipart_requests(client, operations, mapping, files, status, message):
    data = aiohttp.FormData(default_to_multipart=True)
    data.add_field("operations", operations if isinstance(operations, str) else json.dumps(operations))
    data.add_field("map", json.dumps(mapping))
    for name, (filename, content, ctype) in files.items():
        data.add_field(name, content, filename=filename, content_type=ctype)
    resp = await client.post("/graphql", data=data, headers=PREFLIGHT)
    assert resp.status == status, await resp.text()
    assert message in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_file_not_in_map_is_400(client):
    data = form(
        {"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": None}},
        {"0": ["variables.f"]},
        {"0": ("a", b"x", "text/plain"), "extra": ("b", b"y", "text/plain")},
    )
    resp = await client.post("/graphql", data=data, headers=PREFLIGHT)
    assert resp.status == 400


async def test_upload_scalar_rejects_plain_values(client):
    resp = await client.post(
        "/graphql",
        json={"query": "mutation($f: Upload!) { upload(file: $f) { size } }", "variables": {"f": "not a file"}},
        headers={"Accept": "application/graphql-response+json"},
    )
    body = await resp.json(content_type=None)
    assert "multipart request" in json.dumps(body)
