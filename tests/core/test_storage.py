"""The storage provider kind: LocalStorage and the signed download route, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import time

import pytest
import yarl

from plugboard import keys
from plugboard.providers.storage import (
    FileSigner,
    InvalidKey,
    LocalStorage,
    LocalStorageConfig,
    Storage,
    check_key,
    load_or_create_secret,
)


async def _storage(app, **options) -> LocalStorage:
    return await app[keys.PROVIDERS].create("storage", "local", LocalStorageConfig(**options), app=app, owner="test")


@pytest.fixture
async def served(make_app, aiohttp_client):
    app = make_app()
    client = await aiohttp_client(app)
    storage = await _storage(app)
    return client, storage


def _raw(client, path_and_query: str):
    # Unnormalized, percent-encoded as written: what an attacker would send.
    return client.session.get(yarl.URL(str(client.make_url("")).rstrip("/") + path_and_query, encoded=True))


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", ".hidden", "a/.meta/x", "a\\b", "a\x00b", "x" * 600, "a/"],
)
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidKey):
        check_key(key)


def test_good_keys():
    for key in ("a", "exports/books.csv", "tmp/2024/x y.txt", "ünïcode/ß.png"):
        assert check_key(key) == key


async def test_local_storage_is_a_storage(served):
    _client, storage = served
    assert isinstance(storage, Storage)


async def test_put_read_stat_list_delete(served):
    _client, storage = served
    stored = await storage.put("docs/a.txt", b"hello")
    assert (stored.key, stored.size, stored.content_type) == ("docs/a.txt", 5, "text/plain")
    assert await storage.read("docs/a.txt") == b"hello"
    assert await storage.exists("docs/a.txt")

    # A file-like object and an async iterator of chunks.
    await storage.put("docs/b.bin", io.BytesIO(b"x" * 200_000), content_type="application/x-thing")

    async def chunks():
        for part in (b"one,", b"two"):
            yield part

    await storage.put("other/c.csv", chunks())
    assert await storage.read("other/c.csv") == b"one,two"
    assert (await storage.stat("docs/b.bin")).content_type == "application/x-thing"
    assert b"".join([c async for c in storage.open("docs/b.bin")]) == b"x" * 200_000

    assert sorted([f.key async for f in storage.list("docs/")]) == ["docs/a.txt", "docs/b.bin"]
    assert sorted([f.key async for f in storage.list()]) == ["docs/a.txt", "docs/b.bin", "other/c.csv"]
    listed = [f async for f in storage.list("other/")]
    assert listed[0].modified == pytest.approx(time.time(), abs=60)

    assert await storage.delete("docs/a.txt") is True
    assert await storage.delete("docs/a.txt") is False
    assert not await storage.exists("docs/a.txt")
    with pytest.raises(FileNotFoundError):
        await storage.read("docs/a.txt")
    await storage.delete("other/c.csv")
    assert not (storage.root / "other").exists()  # no empty folders left behind


async def test_put_replaces_atomically_and_leaves_no_temp_files(served):
    _client, storage = served
    await storage.put("f.txt", b"old")

    async def slow():
        yield b"new-"
        await asyncio.sleep(0.05)
        yield b"content"

    task = asyncio.create_task(storage.put("f.txt", slow()))
    await asyncio.sleep(0.01)
    assert await storage.read("f.txt") == b"old"  # not half of the new one
    await task
    assert await storage.read("f.txt") == b"new-content"
    assert list((storage.root / ".tmp").iterdir()) == []


async def test_failed_put_leaves_old_file(served):
    _client, storage = served
    await storage.put("f.txt", b"old")

    async def broken():
        yield b"partial"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        await storage.put("f.txt", broken())
    assert await storage.read("f.txt") == b"old"
    assert list((storage.root / ".tmp").iterdir()) == []


async def test_symlink_out_of_root_is_refused(served, tmp_path):
    _client, storage = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    os.symlink(outside, storage.root / "link")
    with pytest.raises(InvalidKey):
        await storage.read("link/secret.txt")
    with pytest.raises(InvalidKey):
        await storage.put("link/new.txt", b"x")
    assert not (outside / "new.txt").exists()


async def test_signed_url_downloads(served):
    client, storage = served
    await storage.put("exports/books 1.csv", b"id,title\n1,Dune\n", content_type="text/csv")
    url = await storage.url("exports/books 1.csv", expires_in=60)
    assert url.startswith("/files/exports/books%201.csv?expires=")
    resp = await client.get(url)
    assert resp.status == 200
    assert await resp.read() == b"id,title\n1,Dune\n"
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"] == "attachment; filename=\"books 1.csv\"; filename*=UTF-8''books%201.csv"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_images_are_inline_and_html_is_not(served):
    client, storage = served
    await storage.put("i/p.png", b"\x89PNG....")
    await storage.put("r/report.html", b"<script>alert(1)</script>")
    png = await client.get(await storage.url("i/p.png"))
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Disposition"].startswith("inline;")
    html = await client.get(await storage.url("r/report.html"))
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.headers["Content-Disposition"].startswith("attachment;")


async def test_expired_url_is_forbidden(served):
    client, storage = served
    await storage.put("a.txt", b"x")
    url = await storage.url("a.txt", expires_in=-1)
    assert (await client.get(url)).status == 403


async def test_tampered_urls_are_forbidden(served):
    client, storage = served
    await storage.put("a.txt", b"x")
    await storage.put("b.txt", b"y")
    url = yarl.URL(await storage.url("a.txt", expires_in=60))
    expires, signature = url.query["expires"], url.query["signature"]
    # Another key with a's signature.
    assert (await client.get(f"/files/b.txt?expires={expires}&signature={signature}")).status == 403
    # A later expiry with the same signature.
    assert (await client.get(f"/files/a.txt?expires={int(expires) + 1000}&signature={signature}")).status == 403
    # A flipped signature character, none at all, garbage expiry.
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert (await client.get(f"/files/a.txt?expires={expires}&signature={flipped}")).status == 403
    assert (await client.get("/files/a.txt")).status == 403
    # A malformed expiry is the client's error, not a bad signature (issue 9, finding 6).
    assert (await client.get(f"/files/a.txt?expires=soon&signature={signature}")).status == 400
    assert (await client.get(f"/files/a.txt?expires={expires}&signature={signature}")).status == 200


async def test_missing_file_is_404(served):
    client, storage = served
    assert (await client.get(await storage.url("nothing/here.txt"))).status == 404


async def test_path_traversal_is_refused(served):
    client, storage = served
    data_dir = storage.root.parent
    (data_dir / "outside.txt").write_text("private")
    signer = storage.signer
    for raw_key, key in (
        ("%2E%2E/outside.txt", "../outside.txt"),
        ("..%2Foutside.txt", "../outside.txt"),
        ("a/%2E%2E/%2E%2E/outside.txt", "a/../../outside.txt"),
        ("%2E%2E%5Coutside.txt", "..\\outside.txt"),
        ("%2E%2E/secret_key", "../secret_key"),
    ):
        # Even with a valid signature for the traversing key: refused.
        resp = await _raw(client, f"/files/{raw_key}?{signer.query(key, 60)}")
        assert resp.status in (400, 404), (raw_key, resp.status)
        assert b"private" not in await resp.read()


async def test_secret_key_setting_signs(make_app, aiohttp_client):
    app = make_app({"server": {"secret_key": "s3cret"}})
    client = await aiohttp_client(app)
    storage = await _storage(app, base_url="https://files.example.com/")
    await storage.put("a.txt", b"x")
    url = yarl.URL(await storage.url("a.txt"))
    assert url.host == "files.example.com"
    expected = FileSigner("s3cret", storage.root).signature("a.txt", int(url.query["expires"]))
    assert url.query["signature"] == expected
    assert (await client.get(url.path_qs)).status == 200
    assert not (storage.root.parent / "secret_key").exists()


async def test_generated_secret_is_kept_0600_and_shared(make_app, aiohttp_client):
    app = make_app()
    client = await aiohttp_client(app)
    storage = await _storage(app)
    await storage.put("a.txt", b"x")
    url = await storage.url("a.txt")
    path = storage.root.parent / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Another app on the same data_dir (a worker) signs the same way.
    other = make_app()
    other_client = await aiohttp_client(other)
    assert (await other_client.get(url)).status == 200
    assert (await client.get(url)).status == 200


def test_load_or_create_secret_is_stable(tmp_path):
    first = load_or_create_secret(tmp_path / "k")
    assert load_or_create_secret(tmp_path / "k") == first
    assert len(first) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


async def test_files_path_setting(make_app, aiohttp_client):
    app = make_app({"server": {"files_path": "/downloads"}})
    client = await aiohttp_client(app)
    storage = await _storage(app)
    await storage.put("a.txt", b"x")
    url = await storage.url("a.txt")
    assert url.startswith("/downloads/a.txt?")
    assert (await client.get(url)).status == 200
