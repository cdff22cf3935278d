"""read_multipart against a tiny aiohttp app: spec cases, limits, streaming, and temp-file cleanup.

The handler answers with what it received (Uploads replaced by a marker
naming their index in ``uploads``), so each test checks the parse from the
outside. Temporary files are anonymous (unlinked at creation on Linux), so
"deleted" is checked twice: the tmp_dir is empty, and no open descriptor of
this process points into it (via /proc/self/fd where available).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from multipart_helpers import BOUNDARY, CONTENT_TYPE, Part, body_bytes, field, file, generated, stream_parts
from plugboard.graphql.upload import Upload
from plugboard.transports.multipart import MultipartError, MultipartRequest, read_multipart

MB = 1024 * 1024
LIMITS = web.AppKey("limits", dict)
TMP_DIR = web.AppKey("tmp_dir", Path)
ERRORS = web.AppKey("errors", list)
SEEN = web.AppKey("seen", list)
MEASURE = web.AppKey("measure", bool)

QUERY = "mutation($f: Upload!) { upload(file: $f) { size } }"
ONE = {"query": QUERY, "variables": {"f": None}}


def temp_fds(directory: Path) -> list[str]:
    """Open descriptors of this process whose target lies in ``directory`` (deleted files included)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return []
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def assert_no_temp_files(directory: Path) -> None:
    assert list(directory.iterdir()) == []
    assert temp_fds(directory) == []


def describe(value: Any, uploads: list[Upload]) -> Any:
    if isinstance(value, Upload):
        return {"$upload": next(i for i, u in enumerate(uploads) if u is value)}
    if isinstance(value, dict):
        return {k: describe(v, uploads) for k, v in value.items()}
    if isinstance(value, list):
        return [describe(v, uploads) for v in value]
    return value


async def handler(request: web.Request) -> web.Response:
    app = request.app
    limits = {"max_file_size": MB, "max_files": 3, "max_operations_size": 4096, "spool_threshold": 1024, **app[LIMITS]}
    if app[MEASURE]:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
    try:
        result = await read_multipart(request, tmp_dir=str(app[TMP_DIR]), **limits)
    except MultipartError as e:
        app[ERRORS].append(e)
        return web.json_response({"error": e.message}, status=e.status)
    except asyncio.CancelledError as e:
        app[ERRORS].append(e)
        raise
    try:
        extra: dict[str, Any] = {}
        if app[MEASURE]:
            extra["peak"] = tracemalloc.get_traced_memory()[1] - baseline
        app[SEEN].extend(result.uploads)
        extra["on_disk"] = len(temp_fds(app[TMP_DIR]))
        files = []
        for upload in result.uploads:
            digest = hashlib.sha256()
            async for chunk in upload.stream():
                digest.update(chunk)
            files.append(
                {"filename": upload.filename, "mimetype": upload.mimetype, "encoding": upload.encoding, "size": upload.size, "sha256": digest.hexdigest()}
            )
        return web.json_response({"operations": describe(result.operations, result.uploads), "files": files, **extra})
    finally:
        await result.close()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


def make_app(tmp_dir: Path, measure: bool = False, **limits: Any) -> web.Application:
    app = web.Application()
    app[LIMITS] = limits
    app[TMP_DIR] = tmp_dir
    app[ERRORS] = []
    app[SEEN] = []
    app[MEASURE] = measure
    app.router.add_post("/", handler)
    return app


@pytest.fixture
def make_client(aiohttp_client, tmp_dir):
    async def make(measure: bool = False, **limits: Any):
        return await aiohttp_client(make_app(tmp_dir, measure, **limits))

    return make


async def post(client, parts: list[Part], *, close: bool = True):
    return await client.post("/", data=stream_parts(parts, close=close), headers={"Content-Type": CONTENT_TYPE})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def sha_of(factory) -> str:
    digest = hashlib.sha256()
    async for chunk in factory():
        digest.update(chunk)
    return digest.hexdigest()


# --- requests the spec allows --------------------------------------------------------------


async def test_single_file(make_client, tmp_dir):
    client = await make_client()
    resp = await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", b"hello file", "a.txt", "text/plain")])
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "operations": {"query": QUERY, "variables": {"f": {"$upload": 0}}},
        "files": [{"filename": "a.txt", "mimetype": "text/plain", "encoding": "7bit", "size": 10, "sha256": sha(b"hello file")}],
        "on_disk": 0,
    }
    assert all(u.closed for u in client.app[SEEN])
    assert_no_temp_files(tmp_dir)


async def test_part_headers_default_and_pass_through(make_client):
    client = await make_client()
    part = Part("0", b"x", filename="b.bin", content_type=None, extra_headers=(("Content-Transfer-Encoding", "binary"),))
    resp = await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"]}), part])
    (info,) = (await resp.json())["files"]
    assert (info["mimetype"], info["encoding"]) == ("application/octet-stream", "binary")


async def test_file_list(make_client):
    client = await make_client()
    ops = {"query": "q", "variables": {"fs": [None, None, None]}}
    mapping = {"a": ["variables.fs.0"], "b": ["variables.fs.1"], "c": ["variables.fs.2"]}
    resp = await post(client, [field("operations", ops), field("map", mapping), file("b", b"two"), file("a", b"one"), file("c", b"three" * 1000)])
    body = await resp.json()
    # Uploads are listed in arrival order; the map decides where each lands.
    assert body["operations"]["variables"]["fs"] == [{"$upload": 1}, {"$upload": 0}, {"$upload": 2}]
    assert [(f["size"], f["sha256"]) for f in body["files"]] == [(3, sha(b"two")), (3, sha(b"one")), (5000, sha(b"three" * 1000))]


async def test_same_file_mapped_to_two_paths(make_client):
    client = await make_client()
    ops = {"query": "q", "variables": {"a": None, "nested": {"b": None}}}
    resp = await post(client, [field("operations", ops), field("map", {"0": ["variables.a", "variables.nested.b"]}), file("0", b"shared")])
    body = await resp.json()
    assert body["operations"]["variables"] == {"a": {"$upload": 0}, "nested": {"b": {"$upload": 0}}}
    assert len(body["files"]) == 1


async def test_batched_operations(make_client):
    client = await make_client()
    ops = [{"query": QUERY, "variables": {"f": None}}, {"query": "q2", "variables": {"fs": [None, None]}}]
    mapping = {"0": ["0.variables.f"], "1": ["1.variables.fs.0"], "2": ["1.variables.fs.1"]}
    resp = await post(client, [field("operations", ops), field("map", mapping), file("0", b"a"), file("1", b"b"), file("2", b"c")])
    body = await resp.json()
    assert body["operations"] == [
        {"query": QUERY, "variables": {"f": {"$upload": 0}}},
        {"query": "q2", "variables": {"fs": [{"$upload": 1}, {"$upload": 2}]}},
    ]
    assert [f["sha256"] for f in body["files"]] == [sha(b"a"), sha(b"b"), sha(b"c")]


async def test_map_entry_with_no_paths_is_accepted(make_client):
    client = await make_client()
    resp = await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"], "x": []}), file("0", b"a"), file("x", b"b")])
    assert resp.status == 200
    assert len((await resp.json())["files"]) == 2


async def test_large_file_streams_to_disk_and_is_deleted(make_client, tmp_dir):
    client = await make_client(max_file_size=64 * MB, spool_threshold=MB)
    content = generated(50 * MB)
    resp = await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", content, "big.bin")])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["files"][0]["size"] == 50 * MB
    assert body["files"][0]["sha256"] == await sha_of(content)
    if Path("/proc/self/fd").is_dir():
        assert body["on_disk"] == 1  # past the spool threshold, the file lived on disk
    (upload,) = client.app[SEEN]
    assert upload.closed
    assert_no_temp_files(tmp_dir)


async def test_200mb_upload_keeps_memory_flat(make_client, tmp_dir):
    client = await make_client(measure=True, max_file_size=256 * MB, spool_threshold=MB)
    content = generated(200 * MB)
    tracemalloc.start()
    try:
        resp = await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", content, "huge.bin")])
        body = await resp.json()
    finally:
        tracemalloc.stop()
    assert resp.status == 200, body
    assert body["files"][0]["size"] == 200 * MB
    assert body["peak"] < 10 * MB, f"peak {body['peak'] / MB:.1f} MB"
    assert body["files"][0]["sha256"] == await sha_of(content)
    assert_no_temp_files(tmp_dir)


# --- requests refused -------------------------------------------------------------------------

LIST_OPS = {"query": "q", "variables": {"fs": [None, None], "s": "text"}}
BIG = b"z" * 20_000  # past the 1 KiB spool threshold: these files are on disk when the error hits


@pytest.mark.parametrize(
    "parts, status, message",
    [
        pytest.param([], 400, "no 'operations' field", id="empty-body"),
        pytest.param([field("map", {"0": ["variables.f"]}), field("operations", ONE)], 400, "first multipart field must be 'operations', got 'map'", id="map-first"),
        pytest.param([file("0", BIG), field("operations", ONE), field("map", {"0": ["variables.f"]})], 400, "first multipart field must be 'operations', got '0'", id="file-first"),
        pytest.param([field("operations", "{bad json"), field("map", {})], 400, "'operations' field is not valid JSON", id="operations-bad-json"),
        pytest.param([field("operations", "42"), field("map", {})], 400, "'operations' field must be a JSON object", id="operations-scalar"),
        pytest.param([field("operations", "[1, 2]"), field("map", {})], 400, "'operations' field must be a JSON object", id="operations-list-of-scalars"),
        pytest.param([field("operations", {"query": "x" * 5000}), field("map", {})], 413, "'operations' field is larger than the limit of 4096 bytes", id="operations-too-big"),
        pytest.param([field("operations", ONE)], 400, "no 'map' field", id="map-missing"),
        pytest.param([field("operations", ONE), file("0", BIG), field("map", {"0": ["variables.f"]})], 400, "second multipart field must be 'map', got '0'", id="file-before-map"),
        pytest.param([field("operations", ONE), field("map", "{nope")], 400, "'map' field is not valid JSON", id="map-bad-json"),
        pytest.param([field("operations", ONE), field("map", ["variables.f"])], 400, "'map' field must be a JSON object mapping", id="map-list"),
        pytest.param([field("operations", ONE), field("map", {"0": "variables.f"})], 400, "'map' field must be a JSON object mapping", id="map-value-string"),
        pytest.param([field("operations", ONE), field("map", {"0": [1]})], 400, "'map' field must be a JSON object mapping", id="map-path-not-string"),
        pytest.param([field("operations", ONE), field("map", {"0": ["x" * 5000]})], 413, "'map' field is larger than the limit", id="map-too-big"),
        pytest.param([field("operations", ONE), field("map", {"0": ["variables.nope"]}), file("0", b"x")], 400, "Path 'variables.nope' in map entry '0' does not exist in operations", id="path-missing"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.s"]}), file("0", b"x")], 400, "Path 'variables.s' in map entry '0' must be null", id="path-not-null"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.fs.2"]}), file("0", b"x")], 400, "'variables.fs.2' in map entry '0' does not exist", id="list-index-out-of-range"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.fs.x"]}), file("0", b"x")], 400, "'variables.fs.x' in map entry '0' does not exist", id="list-index-not-int"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.fs.-1"]}), file("0", b"x")], 400, "'variables.fs.-1' in map entry '0' does not exist", id="list-index-negative"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.s.0"]}), file("0", b"x")], 400, "'variables.s.0' in map entry '0' does not exist", id="path-through-scalar"),
        pytest.param([field("operations", ONE), field("map", {"0": ["1.variables.f"]}), file("0", b"x")], 400, "'1.variables.f' in map entry '0' does not exist", id="batch-path-on-single"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.fs.1"], "1": ["variables.fs.01"]}), file("0", b"x"), file("1", b"y")], 400, "'variables.fs.01' in map entry '1' is mapped more than once", id="slot-mapped-twice"),
        pytest.param([field("operations", LIST_OPS), field("map", {"0": ["variables.fs.0"], "1": ["variables.fs.1"]}), file("0", BIG)], 400, "File missing in the request: '1'", id="file-missing"),
        pytest.param([field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", BIG), file("7", b"x")], 400, "Unexpected multipart field '7': it is not named in 'map'", id="file-not-in-map"),
        pytest.param([field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", BIG), file("0", BIG)], 400, "File '0' was sent more than once", id="file-sent-twice"),
        pytest.param(
            [field("operations", {"query": "q", "variables": {"fs": [None] * 4}}), field("map", {str(i): [f"variables.fs.{i}"] for i in range(4)})]
            + [file(str(i), b"x") for i in range(4)],
            413, "Too many files: the request maps 4 files, the limit is 3", id="too-many-files",
        ),
        pytest.param([field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", b"y" * (MB + 1))], 413, f"File '0' is larger than the limit of {MB} bytes", id="file-too-big"),
    ],
)
async def test_refused(make_client, tmp_dir, parts, status, message):
    client = await make_client()
    resp = await post(client, parts)
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]
    assert_no_temp_files(tmp_dir)


async def test_second_file_too_big_deletes_the_first(make_client, tmp_dir):
    client = await make_client(max_file_size=100_000)
    parts = [field("operations", LIST_OPS), field("map", {"0": ["variables.fs.0"], "1": ["variables.fs.1"]}), file("0", BIG), file("1", generated(5 * MB))]
    resp = await post(client, parts)
    assert resp.status == 413
    assert "File '1' is larger than the limit of 100000 bytes" in (await resp.json())["error"]
    assert_no_temp_files(tmp_dir)


async def test_not_multipart(make_client):
    client = await make_client()
    resp = await client.post("/", json=ONE)
    assert resp.status == 400
    assert (await resp.json())["error"] == "Multipart requests must have Content-Type multipart/form-data, got 'application/json'"


async def test_missing_boundary(make_client):
    client = await make_client()
    resp = await client.post("/", data=b"whatever", headers={"Content-Type": "multipart/form-data"})
    assert resp.status == 400
    assert "Malformed multipart request body" in (await resp.json())["error"]


async def test_truncated_body(make_client, tmp_dir):
    client = await make_client()
    body = await body_bytes([field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", BIG)], close=False)
    resp = await client.post("/", data=body[:-100], headers={"Content-Type": CONTENT_TYPE})
    assert resp.status == 400
    assert "Malformed multipart request body" in (await resp.json())["error"]
    assert_no_temp_files(tmp_dir)


@pytest.mark.parametrize("cancel", [False, True], ids=["read-fails", "handler-cancelled"])
async def test_client_disconnect_mid_upload(tmp_dir, cancel):
    # aiohttp either fails the pending read with ConnectionResetError or, with
    # handler_cancellation=True (the test server's setting), cancels the handler.
    app = make_app(tmp_dir, spool_threshold=1024, max_file_size=64 * MB)
    runner = web.AppRunner(app, handler_cancellation=cancel)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        head = await body_bytes([field("operations", ONE), field("map", {"0": ["variables.f"]})], close=False)
        head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="a.bin"\r\n\r\n'.encode()
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST / HTTP/1.1\r\nHost: test\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(head) + 10 * MB}\r\n\r\n".encode()
            + head
            + b"q" * 3_000_000
        )
        await writer.drain()
        if Path("/proc/self/fd").is_dir():
            # Wait until the partial file is on disk, so the cleanup checked below is real.
            for _ in range(500):
                if temp_fds(tmp_dir):
                    break
                await asyncio.sleep(0.01)
            assert temp_fds(tmp_dir)
        writer.close()
        for _ in range(500):
            if app[ERRORS]:
                break
            await asyncio.sleep(0.01)
        (error,) = app[ERRORS]
        if cancel:
            assert isinstance(error, asyncio.CancelledError)
        else:
            assert isinstance(error, MultipartError)
            assert (error.status, error.message) == (400, "The client disconnected before the multipart request was complete")
        assert_no_temp_files(tmp_dir)
    finally:
        await runner.cleanup()


async def test_close_is_idempotent(make_client):
    client = await make_client()
    await post(client, [field("operations", ONE), field("map", {"0": ["variables.f"]}), file("0", b"abc")])
    (upload,) = client.app[SEEN]
    upload.close()  # already closed by the handler's finally
    assert upload.closed


# --- Upload on its own ------------------------------------------------------------------------


async def test_upload_api(tmp_path):
    spooled = tempfile.SpooledTemporaryFile(max_size=16, dir=tmp_path)
    spooled.write(b"0123456789" * 100)
    spooled.seek(0)
    upload = Upload(spooled, filename="n.txt")
    assert (upload.size, upload.mimetype, upload.encoding) == (1000, "application/octet-stream", "7bit")
    assert await upload.read(4) == b"0123"
    assert upload.tell() == 4
    await upload.save(tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_bytes() == b"0123456789" * 100
    assert upload.tell() == 4  # save copies everything and keeps the position
    assert b"".join([c async for c in upload.stream(chunk_size=300)]) == (b"0123456789" * 100)[4:]
    assert upload.seek(0) == 0
    assert upload.file.read(3) == b"012"
    assert len(await upload.read()) == 997
    upload.close()
    upload.close()
    assert upload.closed


async def test_multipart_request_close_twice(tmp_path):
    uploads = [Upload(tempfile.TemporaryFile(dir=tmp_path), filename=str(i)) for i in range(2)]
    request = MultipartRequest({"variables": {"a": uploads[0], "b": uploads[1]}}, uploads)
    await request.close()
    await request.close()
    assert all(u.closed for u in uploads)
    assert_no_temp_files(tmp_path)
