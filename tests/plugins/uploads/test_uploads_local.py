"""The File API on the embedded default: local storage, SQLite records."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from uploads_kit import FILE_FIELDS, jpeg, pdf, png, stored, upload, upload_many


async def test_upload_then_download_through_the_signed_url(uploads_client, tmp_path):
    client = await uploads_client()
    result = await upload(client, "photo.png", png(), "image/png")
    assert "errors" not in result, result
    f = result["data"]["uploadFile"]
    assert f["filename"] == "photo.png"
    assert f["mimetype"] == "image/png"
    assert f["owner"] == "alice"
    assert f["visibility"] == "PRIVATE"
    assert f["size"] == len(png())
    assert f["encoding"] == "7bit"
    assert "signature=" in f["url"] and "expires=" in f["url"]
    async with client.get(f["url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == png()
    assert stored(tmp_path) == [f"uploads/{f['id']}.png"]


async def test_pdf_and_file_query_and_paging(uploads_client):
    client = await uploads_client()
    ids = [(await upload(client, f"doc{i}.pdf", pdf(), "application/pdf"))["data"]["uploadFile"]["id"] for i in range(3)]
    await upload(client, "bob.pdf", pdf(), "application/pdf", user="bob")
    page = await client.gql_data("{ files(first: 2) { id } }", headers={"Authorization": "Bearer alice"})
    assert [f["id"] for f in page["files"]] == ids[::-1][:2]
    rest = await client.gql_data("query($a: ID) { files(first: 5, after: $a) { id } }", {"a": ids[1]}, headers={"Authorization": "Bearer alice"})
    assert [f["id"] for f in rest["files"]] == [ids[0]]
    admin = await client.gql_data("{ files(first: 10) { owner } }", headers={"Authorization": "Bearer root"})
    assert sorted(f["owner"] for f in admin["files"]) == ["alice", "alice", "alice", "bob"]
    one = await client.gql_data(f"query($id: ID!) {{ file(id: $id) {{ {FILE_FIELDS} }} }}", {"id": ids[0]}, headers={"Authorization": "Bearer alice"})
    assert one["file"]["mimetype"] == "application/pdf"
    # Another user does not see a private file at all.
    other = await client.gql_data("query($id: ID!) { file(id: $id) { id } }", {"id": ids[0]}, headers={"Authorization": "Bearer bob"})
    assert other["file"] is None


async def test_multiple_files(uploads_client, tmp_path):
    client = await uploads_client()
    status, result = await upload_many(client, [("a.png", png(), "image/png"), ("b.jpg", jpeg(), "image/jpeg")], status=200)
    assert [f["mimetype"] for f in result["data"]["uploadMultipleFiles"]] == ["image/png", "image/jpeg"]
    assert len(stored(tmp_path)) == 2


async def test_delete_by_owner_and_admin_not_by_others(uploads_client, tmp_path):
    client = await uploads_client()
    fid = (await upload(client, "a.png", png(), "image/png", visibility="PUBLIC"))["data"]["uploadFile"]["id"]
    delete = "mutation($id: ID!) { deleteFile(id: $id) }"
    refused = await client.gql(delete, {"id": fid}, headers={"Authorization": "Bearer bob"})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await client.gql(delete, {"id": fid})
    assert anonymous["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert len(stored(tmp_path)) == 1
    assert (await client.gql_data(delete, {"id": fid}, headers={"Authorization": "Bearer alice"}))["deleteFile"] is True
    assert stored(tmp_path) == []
    fid = (await upload(client, "b.png", png(), "image/png"))["data"]["uploadFile"]["id"]
    assert (await client.gql_data(delete, {"id": fid}, headers={"Authorization": "Bearer root"}))["deleteFile"] is True
    gone = await client.gql(delete, {"id": fid}, headers={"Authorization": "Bearer root"})
    assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_visibility_public_files_are_seen_by_anyone_and_changed_by_the_owner(uploads_client):
    client = await uploads_client()
    fid = (await upload(client, "a.png", png(), "image/png"))["data"]["uploadFile"]["id"]
    change = "mutation($id: ID!, $v: FileVisibility!) { setFileVisibility(id: $id, visibility: $v) { visibility } }"
    refused = await client.gql(change, {"id": fid, "v": "PUBLIC"}, headers={"Authorization": "Bearer bob"})
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    done = await client.gql_data(change, {"id": fid, "v": "PUBLIC"}, headers={"Authorization": "Bearer alice"})
    assert done["setFileVisibility"]["visibility"] == "PUBLIC"
    seen = await client.gql_data("query($id: ID!) { file(id: $id) { url } }", {"id": fid})
    # A stable URL: no signature, no expiry.
    assert seen["file"]["url"] == f"/uploads/public/{fid}"
    async with client.get(seen["file"]["url"]) as resp:
        assert resp.status == 200 and await resp.read() == png()
        assert resp.headers["Content-Type"] == "image/png"
    # Back to private: the stable URL stops working.
    await client.gql_data(change, {"id": fid, "v": "PRIVATE"}, headers={"Authorization": "Bearer alice"})
    async with client.get(f"/uploads/public/{fid}") as resp:
        assert resp.status == 404


async def test_forged_and_expired_signed_urls_are_refused(uploads_client):
    client = await uploads_client()
    f = (await upload(client, "a.png", png(), "image/png"))["data"]["uploadFile"]
    parts = urlsplit(f["url"])
    query = parse_qs(parts.query)
    forged = f"{parts.path}?expires={query['expires'][0]}&signature={'0' * 64}"
    async with client.get(forged) as resp:
        assert resp.status in (403, 404)
    later = int(query["expires"][0]) + 3600
    async with client.get(f"{parts.path}?expires={later}&signature={query['signature'][0]}") as resp:
        assert resp.status in (403, 404)
    async with client.get(f"{parts.path}?expires=1&signature={query['signature'][0]}") as resp:
        assert resp.status in (403, 404)
    async with client.get(parts.path) as resp:
        assert resp.status in (403, 404)


PREPARE = "mutation($n: String!, $t: String!, $s: Int!) { prepareUpload(filename: $n, mimetype: $t, size: $s) { id method url headers fields expiresAt } }"
COMPLETE = f"mutation($id: ID!) {{ completeUpload(id: $id) {{ {FILE_FIELDS} }} }}"
ALICE = {"Authorization": "Bearer alice"}


async def test_direct_upload_to_local_storage(uploads_client, tmp_path):
    client = await uploads_client()
    prepared = (await client.gql_data(PREPARE, {"n": "direct.png", "t": "image/png", "s": len(png())}, headers=ALICE))["prepareUpload"]
    assert prepared["method"] == "PUT" and prepared["headers"] == {"Content-Type": "image/png", "Content-Length": str(len(png()))}
    # Not visible until completed.
    assert (await client.gql_data("{ files { id } }", headers=ALICE))["files"] == []
    async with client.put(prepared["url"], data=png(), headers=prepared["headers"]) as resp:
        assert resp.status == 200, await resp.text()
    done = (await client.gql_data(COMPLETE, {"id": prepared["id"]}, headers=ALICE))["completeUpload"]
    assert done["id"] == prepared["id"] and done["size"] == len(png()) and done["filename"] == "direct.png"
    async with client.get(done["url"]) as resp:
        assert await resp.read() == png()
    # The URL is single-use: the upload is no longer waiting.
    async with client.put(prepared["url"], data=png(), headers=prepared["headers"]) as resp:
        assert resp.status == 403
    again = await client.gql(COMPLETE, {"id": prepared["id"]}, headers=ALICE)
    assert again["errors"][0]["extensions"]["code"] == "NOT_FOUND"
