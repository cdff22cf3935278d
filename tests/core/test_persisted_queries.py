"""The core's side of automatic persisted queries: the protocol, with a store from any plugin or none.

Without a store every request carrying ``extensions.persistedQuery`` is
answered PERSISTED_QUERY_NOT_SUPPORTED (Apollo Client then sends full
documents); a request with neither a document nor the extension is still a
400; a third-party store gets lowercase hashes and validated documents, and
its outage never fails an operation that carries its document; two plugins
keeping persisted queries fail start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import types

import aiohttp
import pytest
from core_testkit import echo_plugin

from plugboard import hookimpl
from plugboard.errors import PluginLoadError, ProviderError
from plugboard.graphql.persisted import PersistedQueryStore

QUERY = "{ plugboardVersion }"
HASH = hashlib.sha256(QUERY.encode()).hexdigest()
EXTENSIONS = {"persistedQuery": {"version": 1, "sha256Hash": HASH}}


class DictStore:
    def __init__(self, failing: bool = False) -> None:
        self.documents: dict[str, str] = {}
        self.failing = failing

    async def load(self, sha256: str) -> str | None:
        if self.failing:
            raise ProviderError("the store is down")
        return self.documents.get(sha256)

    async def save(self, sha256: str, document: str) -> None:
        if self.failing:
            raise ProviderError("the store is down")
        self.documents[sha256] = document


def store_plugin(store: DictStore) -> types.SimpleNamespace:
    @hookimpl
    def plugboard_persisted_queries():
        return store

    return types.SimpleNamespace(plugboard_persisted_queries=plugboard_persisted_queries)


async def post(client, body):
    resp = await client.post("/graphql", json=body, headers={"Accept": "application/graphql-response+json"})
    return resp, await resp.json(content_type=None)


async def test_without_a_store_persisted_requests_are_not_supported(plugboard_client):
    client = await plugboard_client({"plugins": ["books"]})
    for body in ({"extensions": EXTENSIONS}, {"query": QUERY, "extensions": EXTENSIONS}):
        resp, answer = await post(client, body)
        assert resp.status == 200 and answer == {
            "errors": [{"message": "PersistedQueryNotSupported", "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"}}]
        }, answer
        assert resp.headers["Cache-Control"] == "private, no-cache, must-revalidate"


@pytest.mark.parametrize("body", [{}, {"extensions": {}}, {"extensions": {"other": 1}}, {"variables": {}, "extensions": None}])
async def test_no_document_and_no_hash_is_still_a_400(plugboard_client, body):
    client = await plugboard_client({"plugins": ["books"]})
    resp, answer = await post(client, body)
    assert resp.status == 400 and "'query' is missing" in answer["errors"][0]["message"], answer
    resp = await client.get("/graphql", params={"extensions": json.dumps(body.get("extensions") or {})}, headers={"apollo-require-preflight": "1"})
    assert resp.status == 400 and "'query' is missing" in (await resp.json(content_type=None))["errors"][0]["message"]


async def test_a_plugins_store_gets_checked_documents(plugboard_client):
    store = DictStore()
    assert isinstance(store, PersistedQueryStore)
    client = await plugboard_client({"plugins": ["books"]}, plugins=[store_plugin(store)])
    upper = {"persistedQuery": {"version": 1, "sha256Hash": HASH.upper()}}
    resp, answer = await post(client, {"query": QUERY, "extensions": upper})
    assert answer == {"data": {"plugboardVersion": "0.1.0"}}, answer
    assert store.documents == {HASH: QUERY}
    resp, answer = await post(client, {"extensions": EXTENSIONS})
    assert answer == {"data": {"plugboardVersion": "0.1.0"}}, answer


async def test_a_store_outage_never_fails_an_operation_that_carries_its_document(plugboard_client, caplog):
    caplog.set_level(logging.DEBUG, "plugboard.graphql")
    client = await plugboard_client({"plugins": ["books"]}, plugins=[store_plugin(DictStore(failing=True))])
    resp, answer = await post(client, {"extensions": EXTENSIONS})
    assert resp.status == 200 and answer["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND", answer
    resp, answer = await post(client, {"query": QUERY, "extensions": EXTENSIONS})
    assert answer == {"data": {"plugboardVersion": "0.1.0"}}, answer
    assert "the store did not answer" in caplog.text and "could not save a document" in caplog.text


async def test_two_plugins_keeping_persisted_queries_fail_start_up(plugboard_app):
    with pytest.raises(PluginLoadError, match="at most one plugin may keep them"):
        plugboard_app({"plugins": ["books"]}, plugins=[store_plugin(DictStore()), store_plugin(DictStore())])
    with pytest.raises(PluginLoadError, match="must return a PersistedQueryStore"):
        plugboard_app({"plugins": ["books"]}, plugins=[store_plugin({})])


async def test_a_null_extension_is_no_request_and_the_version_is_the_integer_1(plugboard_client):
    client = await plugboard_client({"plugins": ["books"]})
    resp, answer = await post(client, {"query": QUERY, "extensions": {"persistedQuery": None}})
    assert answer == {"data": {"plugboardVersion": "0.1.0"}}, answer  # as Apollo Server: runs the document
    client = await plugboard_client({"plugins": ["books"]}, plugins=[store_plugin(DictStore())])
    for version in (True, 1.0, "1"):
        resp, answer = await post(client, {"query": QUERY, "extensions": {"persistedQuery": {"version": version, "sha256Hash": HASH}}})
        assert resp.status == 400 and "Unsupported persisted query version" in answer["errors"][0]["message"], answer


async def test_files_never_go_by_a_hash(plugboard_client):
    # The fields each file reaches (and their upload rules) are found from
    # the document before the file is read: without it they could not be.
    store = DictStore()
    client = await plugboard_client({"graphql": {"max_file_size": "1KB"}}, plugins=[echo_plugin(), store_plugin(store)])
    document = "mutation($f: Upload!) { upload(file: $f) { size } }"
    sha = hashlib.sha256(document.encode()).hexdigest()
    persisted_query = {"persistedQuery": {"version": 1, "sha256Hash": sha}}

    def form(operations):
        data = aiohttp.FormData(default_to_multipart=True)
        data.add_field("operations", json.dumps(operations))
        data.add_field("map", json.dumps({"0": ["variables.f"]}))
        data.add_field("0", b"x" * 100, filename="a.txt", content_type="text/plain")
        return data

    headers = {"apollo-require-preflight": "1", "Accept": "application/graphql-response+json"}
    resp = await client.post("/graphql", data=form({"query": document, "variables": {"f": None}, "extensions": persisted_query}), headers=headers)
    assert (await resp.json(content_type=None)) == {"data": {"upload": {"size": 100}}}
    assert store.documents == {sha: document}
    resp = await client.post("/graphql", data=form({"variables": {"f": None}, "extensions": persisted_query}), headers=headers)
    body = await resp.json(content_type=None)
    assert resp.status == 400 and "must carry its document" in body["errors"][0]["message"], body
