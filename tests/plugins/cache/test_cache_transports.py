"""The response cache on the other transports: a query over WebSocket and SSE hits the same entries."""

from __future__ import annotations

from cache_testkit import make_app, post


async def test_websocket_query_hits_the_http_entry(aiohttp_client, tmp_path, fixture_plugin):
    client = await aiohttp_client(make_app(tmp_path, {"plugins": ["realtime", "cache"]}, plugins=[fixture_plugin]))
    await post(client, "{ items { id } }")
    async with client.ws_connect("/graphql", protocols=("graphql-transport-ws",)) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        for n in ("1", "2"):
            await ws.send_json({"id": n, "type": "subscribe", "payload": {"query": "{ items { id } }"}})
            message = await ws.receive_json(timeout=5)
            assert message["type"] == "next" and message["payload"]["data"]["items"][0] == {"id": "1"}
            assert (await ws.receive_json(timeout=5))["type"] == "complete"
    assert fixture_plugin.calls["items"] == 1
