"""Bad input: each refused with a clear error, leaving no object, record or temporary file behind."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from plugboard import keys
from plugboard.plugins.uploads.validation import normalise_filename
from uploads_kit import bomb_png, elf, files_in, jpeg, pdf, png, stored, upload, upload_many


async def records(client) -> list:
    app = client.server.app
    table = app[keys.METADATA].tables["uploads_files"]
    async with app[keys.RECORDS].connect() as conn:
        return (await conn.execute(sa.select(table))).all()


async def assert_nothing_left(client, tmp_path):
    assert stored(tmp_path) == []
    assert files_in(tmp_path / "var" / "files" / ".tmp") == []
    assert await records(client) == []


def error_code(result: dict) -> str:
    assert "errors" in result, result
    return result["errors"][0]["extensions"]["code"]


async def test_over_the_transport_limit_is_cut_mid_stream_with_413(uploads_client, tmp_path):
    client = await uploads_client(graphql={"max_file_size": "64KB"}, uploads={"max_file_size": "64KB"})
    result = await upload(client, "big.png", png() + b"\0" * 200_000, "image/png", status=413)
    assert "larger than the limit" in result["errors"][0]["message"]
    await assert_nothing_left(client, tmp_path)


async def test_over_the_plugin_limit(uploads_client, tmp_path):
    client = await uploads_client(uploads={"max_file_size": "1KB"})
    # Stopped by the transport as the bytes arrive (test_uploads_streaming.py proves mid-stream).
    result = await upload(client, "big.pdf", pdf() + b" " * 2000, "application/pdf", status=413)
    assert error_code(result) == "FILE_TOO_LARGE"
    await assert_nothing_left(client, tmp_path)


async def test_plugin_limit_above_the_transport_limit_fails_startup(plugboard_app):
    from plugboard.errors import ConfigError
    from uploads_kit import settings

    with pytest.raises(ConfigError) as e:
        plugboard_app(settings({"max_file_size": "20MB"}))
    assert "uploads.max_file_size" in str(e.value) and "graphql.max_file_size" in str(e.value)


async def test_disallowed_type(uploads_client, tmp_path):
    client = await uploads_client(uploads={"allowed_types": ["image/*"]})
    result = await upload(client, "doc.pdf", pdf(), "application/pdf", status=400)
    assert error_code(result) == "FILE_TYPE_NOT_ALLOWED"
    assert "application/pdf" in result["errors"][0]["message"]
    await assert_nothing_left(client, tmp_path)


async def test_spoofed_type_an_executable_sent_as_png(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "cat.png", elf(), "image/png", status=400)
    assert error_code(result) == "FILE_TYPE_MISMATCH"
    assert "application/x-executable" in result["errors"][0]["message"]
    await assert_nothing_left(client, tmp_path)


async def test_executable_with_no_declared_type_is_not_allowed(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "cat.png", elf(), "application/octet-stream", status=400)
    assert error_code(result) == "FILE_TYPE_NOT_ALLOWED"
    await assert_nothing_left(client, tmp_path)


async def test_corrupt_image(uploads_client, tmp_path):
    client = await uploads_client()
    broken = png(300, 300)
    result = await upload(client, "broken.png", broken[: len(broken) // 2], "image/png")
    assert error_code(result) == "CORRUPT_IMAGE"
    await assert_nothing_left(client, tmp_path)


async def test_decompression_bomb(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "bomb.png", bomb_png(12000), "image/png")
    assert error_code(result) == "IMAGE_TOO_LARGE"
    assert "more than the limit of 50000000" in result["errors"][0]["message"]
    await assert_nothing_left(client, tmp_path)


async def test_zero_byte_file(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "empty.png", b"", "image/png", status=400)
    assert error_code(result) == "EMPTY_FILE"
    await assert_nothing_left(client, tmp_path)


async def test_too_many_files_for_the_transport(uploads_client, tmp_path):
    client = await uploads_client(graphql={"max_files": 2})
    status, result = await upload_many(client, [("a.pdf", pdf(), "application/pdf")] * 3)
    assert status == 413 and "Too many files" in result["errors"][0]["message"]
    await assert_nothing_left(client, tmp_path)


async def test_too_many_files_for_the_plugin(uploads_client, tmp_path):
    client = await uploads_client(uploads={"max_files": 2})
    status, result = await upload_many(client, [("a.pdf", pdf(), "application/pdf")] * 3)
    assert error_code(result) == "TOO_MANY_FILES"
    await assert_nothing_left(client, tmp_path)


async def test_one_bad_file_undoes_the_whole_batch(uploads_client, tmp_path):
    client = await uploads_client()
    status, result = await upload_many(client, [("a.png", png(), "image/png"), ("b.jpg", jpeg(), "image/jpeg"), ("c.png", elf(), "image/png")])
    assert error_code(result) == "FILE_TYPE_MISMATCH"
    await assert_nothing_left(client, tmp_path)


async def test_anonymous_upload_is_refused(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "a.png", png(), "image/png", user=None)
    assert error_code(result) == "UNAUTHENTICATED"
    await assert_nothing_left(client, tmp_path)


@pytest.mark.parametrize(
    "sent, kept",
    [
        ("../../etc/passwd.png", "passwd.png"),
        ("..\\..\\win.ini.png", "win.ini.png"),
        ("/abs/path/photo.png", "photo.png"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("e\u0301te\u0301.png", "\u00e9t\u00e9.png"),
        ("..", "file.png"),
        ("", "file.png"),
    ],
)
async def test_filenames_are_normalised_and_never_the_key(uploads_client, tmp_path, sent, kept):
    client = await uploads_client()
    result = await upload(client, sent, png(), "image/png")
    f = result["data"]["uploadFile"]
    assert f["filename"] == kept
    assert stored(tmp_path) == [f"uploads/{f['id']}.png"]


async def test_a_thousand_character_filename_is_shortened_keeping_the_extension(uploads_client):
    client = await uploads_client()
    result = await upload(client, "a" * 1000 + ".png", png(), "image/png")
    name = result["data"]["uploadFile"]["filename"]
    assert len(name) == 255 and name.endswith("a.png")


def test_control_characters_and_nul_are_removed():
    assert normalise_filename("a\x00b\x1fc\x7f.png", max_length=255, mimetype="image/png") == "abc.png"
    assert normalise_filename("x\u2066y\u200d.pdf", max_length=255, mimetype="application/pdf") == "xy.pdf"
    assert normalise_filename(".bashrc", max_length=255, mimetype="text/plain") == "bashrc"


async def test_signed_url_of_a_deleted_file_no_longer_works(uploads_client):
    client = await uploads_client()
    f = (await upload(client, "a.png", png(), "image/png"))["data"]["uploadFile"]
    await client.gql_data("mutation($id: ID!) { deleteFile(id: $id) }", {"id": f["id"]}, headers={"Authorization": "Bearer alice"})
    async with client.get(f["url"]) as resp:
        assert resp.status == 404


def test_bad_config_values_name_the_key(plugboard_app):
    from plugboard.errors import ConfigError
    from uploads_kit import settings

    with pytest.raises(ConfigError) as e:
        plugboard_app(settings({"allowed_types": ["image/*", "pdf"], "image_optimization": {"formats": ["gif"], "quality": 0}, "storage": "media"}))
    text = str(e.value)
    for key in ("uploads.allowed_types", "uploads.image_optimization.formats", "uploads.image_optimization.quality"):
        assert key in text, text


def test_unknown_storage_service_and_provider_mismatch(plugboard_app):
    from plugboard.errors import ConfigError
    from uploads_kit import settings

    with pytest.raises(ConfigError) as e:
        plugboard_app(settings({"storage": "media"}))
    assert "uploads.storage" in str(e.value) and "no storage service" in str(e.value)
    with pytest.raises(ConfigError) as e:
        plugboard_app(settings({"provider": "s3"}))
    assert "uploads.provider" in str(e.value) and "services.storage.default.provider" in str(e.value)


PREPARE = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id url headers } }"
COMPLETE = "mutation($id: ID!) { completeUpload(id: $id) { id size } }"
ALICE = {"Authorization": "Bearer alice"}


async def prepare(client, size: int, mimetype: str = "image/png") -> dict:
    return (await client.gql_data(PREPARE, {"n": "d.png", "t": mimetype, "s": size}, headers=ALICE))["prepareUpload"]


async def test_prepare_refuses_bad_sizes_and_types(uploads_client, tmp_path):
    client = await uploads_client(uploads={"max_file_size": "1KB"})
    for variables, code in [
        ({"n": "a.png", "t": "image/png", "s": 0}, "EMPTY_FILE"),
        ({"n": "a.png", "t": "image/png", "s": 5000}, "FILE_TOO_LARGE"),
        ({"n": "a.exe", "t": "application/x-executable", "s": 10}, "FILE_TYPE_NOT_ALLOWED"),
    ]:
        assert error_code(await client.gql(PREPARE, variables, headers=ALICE)) == code
    await assert_nothing_left(client, tmp_path)


async def test_direct_upload_url_forged_wrong_length_or_type(uploads_client, tmp_path):
    client = await uploads_client()
    prepared = await prepare(client, len(png()))
    forged = prepared["url"].rsplit("signature=", 1)[0] + "signature=" + "0" * 64
    async with client.put(forged, data=png(), headers=prepared["headers"]) as resp:
        assert resp.status == 403
    async with client.put(prepared["url"], data=png() + b"xx", headers={"Content-Type": "image/png"}) as resp:
        assert resp.status == 400 and "Content-Length" in await resp.text()
    async with client.put(prepared["url"], data=png(), headers={"Content-Type": "image/jpeg"}) as resp:
        assert resp.status == 400 and "Content-Type" in await resp.text()
    # The right length and type header, the wrong content: refused on the first bytes, nothing stored.
    async with client.put(prepared["url"], data=elf()[: len(png())].ljust(len(png()), b"\0"), headers=prepared["headers"]) as resp:
        assert resp.status == 400 and "application/x-executable" in await resp.text()
    assert error_code(await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)) == "UPLOAD_INCOMPLETE"
    # Another user cannot complete it.
    assert error_code(await client.gql(COMPLETE, {"id": prepared["id"]}, headers={"Authorization": "Bearer bob"})) == "NOT_FOUND"
    assert stored(tmp_path) == []


async def test_expired_direct_upload_is_refused_and_cleaned_up(uploads_client, tmp_path):
    import asyncio

    from plugboard.plugins.uploads.keys import UPLOADS

    client = await uploads_client(uploads={"direct_upload_expiry": "1s"})
    prepared = await prepare(client, len(png()))
    stale = await prepare(client, len(png()))
    await asyncio.sleep(2.1)
    async with client.put(prepared["url"], data=png(), headers={"Content-Type": "image/png"}) as resp:
        assert resp.status == 403 and "expired" in await resp.text()
    assert error_code(await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)) == "UPLOAD_EXPIRED"
    removed = await client.server.app[UPLOADS].cleanup(max_age=0)
    assert removed["expired"] == 1
    assert stale["id"] not in [r.id for r in await records(client)]
    await assert_nothing_left(client, tmp_path)


async def test_cleanup_removes_objects_without_records_and_records_without_objects(uploads_client, tmp_path):
    import datetime as dt

    from plugboard.plugins.uploads.keys import UPLOADS

    client = await uploads_client()
    service = client.server.app[UPLOADS]
    kept = (await upload(client, "a.png", png(), "image/png"))["data"]["uploadFile"]
    # A crash after the object was written, before its record: an orphan object.
    await service.storage.put("uploads/0123456789abcdef0123456789abcdef.png", png())
    # A crash after the record was written, before the object: a stale pending row.
    table = service.table
    async with service.records.begin() as conn:
        await conn.execute(table.insert().values(
            id="f" * 32, key="uploads/" + "f" * 32 + ".png", storage="default", filename="x.png", mimetype="image/png",
            encoding="7bit", size=1, owner="alice", visibility="private", status="pending", variants=[], processing=False,
            created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2),
        ))
    # A ready file whose object vanished (removed behind our back, or a storage restored from an old backup).
    gone = (await upload(client, "gone.png", png(), "image/png"))["data"]["uploadFile"]
    await service.storage.delete(f"uploads/{gone['id']}.png")
    removed = await service.cleanup(max_age=0)
    assert removed == {"pending": 1, "expired": 0, "orphans": 1, "missing": 1}
    assert stored(tmp_path) == [f"uploads/{kept['id']}.png"]
    assert [r.id for r in await records(client)] == [kept["id"]]
    # Younger than max_age: nothing is touched (an upload in progress elsewhere).
    await service.storage.put("uploads/" + "e" * 32 + ".png", png())
    assert await service.cleanup(max_age=3600) == {"pending": 0, "expired": 0, "orphans": 0, "missing": 0}


async def test_uploads_cleanup_runs_as_a_job(plugboard_client, tmp_path):
    from plugboard.plugins.jobs.keys import JOBS
    from plugboard.plugins.uploads.keys import UPLOADS
    from plugboard.testing import eventually
    from uploads_kit import auth_plugin

    data = {"plugins": ["jobs", "uploads"], "jobs": {"schedules": []}, "uploads": {"image_optimization": {"enabled": False}}}
    client = await plugboard_client(data, plugins=[auth_plugin()])
    app = client.server.app
    await app[UPLOADS].storage.put("uploads/" + "a" * 32 + ".png", png())
    job = await app[JOBS].enqueue("uploads-cleanup", {"max_age": 0})

    async def finished():
        got = await app[JOBS].get(job.id)
        return got if got.status.value == "COMPLETED" else None

    done = await eventually(finished, timeout=10)
    assert done.result == {"pending": 0, "expired": 0, "orphans": 1, "missing": 0}
    assert stored(tmp_path) == []
