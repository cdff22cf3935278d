"""maxFileSize and allowedTypes enforced as the bytes arrive, through the core's ``plugboard_upload_rules``.

A raw socket client sends only part of the body, then waits: the answer
arriving while the body is still incomplete proves the server refused the
file mid-stream (it could not have spooled the whole part). A real aiohttp
client streaming an oversize body from a generator checks the connection is
handled cleanly: it reads the 413, and the server serves the next request.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile

import pytest
import sqlalchemy as sa

from plugboard import keys
from uploads_kit import PREFLIGHT, UPLOAD, UPLOAD_MANY, elf, form, pdf, png, stored

MB = 1024 * 1024


@pytest.fixture
def spool_dir(tmp_path, monkeypatch):
    """The multipart transport's temporary files go here (it uses the process's temporary directory)."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def open_spool_files(folder) -> list[str]:
    """Files under ``folder`` this process still holds open (unnamed O_TMPFILE ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


async def records(client) -> list:
    app = client.server.app
    table = app[keys.METADATA].tables["uploads_files"]
    async with app[keys.RECORDS].connect() as conn:
        return (await conn.execute(sa.select(table))).all()


def head_and_tail(query: str, filename: str, content: bytes, ctype: str, *, many: bool = False) -> tuple[bytes, bytes, dict]:
    """The multipart body split after the file's content, and its headers."""
    files = [(filename, content, ctype)]
    body = form(query, files, many=many).body()
    cut = body.index(content) + len(content)
    return body[:cut], body[cut:], form(query, files, many=many).headers


async def send_until_answered(client, body: bytes, first: int, headers: dict, *, user: str = "alice") -> tuple[int, dict, bytes, int]:
    """Send ``first`` bytes of ``body``, then trickle the rest (4KB every 5ms) until the server answers.

    Returns the status, the JSON body, the raw headers, and how many body
    bytes had been sent when the answer began (the rest was never sent).
    """
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [
        "POST /graphql HTTP/1.1",
        f"Host: {client.server.host}:{client.server.port}",
        f"Content-Length: {len(body)}",
        f"Authorization: Bearer {user}",
        *(f"{k}: {v}" for k, v in {**PREFLIGHT, **headers}.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:first])
    sent = first

    async def trickle() -> None:
        nonlocal sent
        while sent < len(body):
            await asyncio.sleep(0.005)
            writer.write(body[sent : sent + 4096])
            sent = min(sent + 4096, len(body))
            await writer.drain()

    trickling = asyncio.ensure_future(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 20)
        answered_at = sent
        trickling.cancel()
        raw_headers = b""
        while (line := await reader.readline()) not in (b"\r\n", b""):
            raw_headers += line
        length = int(next(h.split(b":")[1] for h in raw_headers.split(b"\r\n") if h.lower().startswith(b"content-length")))
        payload = await reader.readexactly(length)
    finally:
        trickling.cancel()
        writer.close()
    return int(status_line.split()[1]), json.loads(payload), raw_headers, answered_at


async def test_plugin_limit_stops_the_stream_mid_way(uploads_client, tmp_path, spool_dir):
    client = await uploads_client(uploads={"max_file_size": "1MB"})  # the core's limit stays 10MB
    content = pdf() + b" " * (5 * MB)
    head, tail, headers = head_and_tail(UPLOAD, "big.pdf", content, "application/pdf")
    status, result, raw_headers, answered_at = await send_until_answered(client, head + tail, len(head) - len(content) + MB, headers)
    # Answered within 1MB (plus aiohttp's read-ahead) of the 5MB file.
    assert answered_at < len(head) - len(content) + MB + 512 * 1024
    assert status == 413
    error = result["errors"][0]
    assert error["extensions"]["code"] == "FILE_TOO_LARGE"
    assert f"larger than the limit of {MB} bytes for Mutation.uploadFile" in error["message"]
    assert b"Connection: close" in raw_headers
    assert open_spool_files(spool_dir) == []
    assert stored(tmp_path) == [] and await records(client) == []


async def test_wrong_type_is_refused_on_the_first_bytes(uploads_client, tmp_path, spool_dir):
    client = await uploads_client()
    content = elf() + b"\0" * (3 * MB)
    head, tail, headers = head_and_tail(UPLOAD, "cat.png", content, "image/png")
    status, result, _, answered_at = await send_until_answered(client, head + tail, len(head) - len(content) + 8192, headers)
    assert answered_at < len(head) - len(content) + 256 * 1024  # of a 3MB file
    assert status == 400
    assert result["errors"][0]["extensions"]["code"] == "FILE_TYPE_MISMATCH"
    assert open_spool_files(spool_dir) == []
    assert stored(tmp_path) == [] and await records(client) == []


async def test_disallowed_type_in_a_list_is_refused_on_the_first_bytes(uploads_client, tmp_path, spool_dir):
    client = await uploads_client(uploads={"allowed_types": ["image/*"]})
    content = pdf() + b" " * (2 * MB)
    head, tail, headers = head_and_tail(UPLOAD_MANY, "doc.pdf", content, "application/pdf", many=True)
    status, result, _, answered_at = await send_until_answered(client, head + tail, len(head) - len(content) + 8192, headers)
    assert answered_at < len(head) - len(content) + 256 * 1024
    assert status == 400
    assert result["errors"][0]["extensions"]["code"] == "FILE_TYPE_NOT_ALLOWED"
    assert open_spool_files(spool_dir) == []
    assert stored(tmp_path) == [] and await records(client) == []


async def test_a_real_client_streaming_an_oversize_body_gets_413_and_the_server_carries_on(uploads_client, tmp_path, spool_dir):
    import aiohttp

    client = await uploads_client(uploads={"max_file_size": "1MB"})
    content = pdf() + b" " * (16 * MB)
    head, tail, headers = head_and_tail(UPLOAD, "big.pdf", content, "application/pdf")
    body = head + tail
    sent = 0

    async def chunks():
        nonlocal sent
        for i in range(0, len(body), 64 * 1024):
            sent += 64 * 1024
            yield body[i : i + 64 * 1024]

    url = f"http://{client.server.host}:{client.server.port}/graphql"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=chunks(), headers={**PREFLIGHT, **headers, "Authorization": "Bearer alice"}) as resp:
            assert resp.status == 413
            result = await resp.json()
    assert result["errors"][0]["extensions"]["code"] == "FILE_TOO_LARGE"
    assert open_spool_files(spool_dir) == []
    assert stored(tmp_path) == [] and await records(client) == []
    # The server is fine: the next upload on a new connection works.
    ok = form(UPLOAD, [("small.png", png(), "image/png")])
    async with client.post("/graphql", data=ok.body(), headers={**PREFLIGHT, **ok.headers, "Authorization": "Bearer alice"}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["data"]["uploadFile"]["mimetype"] == "image/png"


async def test_files_for_fields_without_rules_keep_the_core_limit(plugboard_client, tmp_path):
    """A plugin's rules cover its own fields only: another plugin's Upload argument gets the core's limit."""
    import types

    from plugboard import hookimpl
    from uploads_kit import auth_plugin, settings

    async def size(parent, args, context, info):
        return args["file"].size

    other = types.SimpleNamespace(
        __name__="other_uploads",
        plugboard_schema=hookimpl(lambda: "extend type Mutation { measure(file: Upload!): Int! }"),
        plugboard_resolvers=hookimpl(lambda: {"Mutation.measure": size}),
    )
    client = await plugboard_client(settings({"max_file_size": "1KB"}), plugins=[auth_plugin(), other])
    data = form("mutation($f: Upload!) { measure(file: $f) }", [("a.bin", b"x" * 5000, "application/octet-stream")])
    async with client.post("/graphql", data=data.body(), headers={**PREFLIGHT, **data.headers}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["data"]["measure"] == 5000
    # ... and the uploads plugin's field in the same app refuses the same file.
    data = form(UPLOAD, [("a.pdf", pdf() + b" " * 5000, "application/pdf")])
    async with client.post("/graphql", data=data.body(), headers={**PREFLIGHT, **data.headers, "Authorization": "Bearer alice"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["errors"][0]["extensions"]["code"] == "FILE_TOO_LARGE"


async def test_upload_rules_for_an_unknown_field_fail_startup(plugboard_app):
    import types

    from plugboard import hookimpl
    from plugboard.errors import SchemaError
    from plugboard.graphql.upload import UploadRules

    bad = types.SimpleNamespace(
        __name__="bad_rules", plugboard_upload_rules=hookimpl(lambda: {"Mutation.nope": UploadRules(max_file_size=1)})
    )
    with pytest.raises(SchemaError, match="plugin 'bad_rules': upload rules for 'Mutation.nope'"):
        plugboard_app({"plugins": []}, plugins=[bad])
