"""Chat: createChat, sendMessage, chats, messages (cursor pages), messageReceived (members only)."""

from __future__ import annotations

import asyncio
import base64

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard import keys
from plugboard.testing import TransportWS, eventually, gql
from realtime_testkit import code, subscribe

ISOLATED = {"websockets": False, "serverSentEvents": False, "channels": {"enabled": False}}

CREATE = "mutation($n: String!, $m: [ID!]!) { createChat(name: $n, members: $m) { id name members createdAt } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(chatId: $c, body: $b) { id chatId senderId body createdAt } }"
PAGE = """query($c: ID!, $f: Int, $b: String) {
  messages(chatId: $c, first: $f, before: $b) { edges { cursor node { id body senderId } } pageInfo { hasNextPage endCursor } }
}"""
RECEIVED = "subscription($c: ID!) { messageReceived(chatId: $c) { id chatId senderId body createdAt } }"


@pytest.fixture
async def client(make_realtime_app, aiohttp_client):
    return await aiohttp_client(make_realtime_app({"realtime": ISOLATED}))


async def new_chat(client, name="team", members=("bob",), user="alice") -> str:
    result = await gql(client, CREATE, {"n": name, "m": list(members)}, token=user)
    return result["data"]["createChat"]["id"]


async def test_create_chat_and_list_mine(client):
    result = (await gql(client, CREATE, {"n": "  team  ", "m": ["bob", "bob", "carol"]}, token="alice"))["data"]["createChat"]
    # The creator is always a member; duplicates collapse; the name is trimmed.
    assert result["name"] == "team" and result["members"] == ["alice", "bob", "carol"]
    assert "T" in result["createdAt"]
    other = await new_chat(client, "bob and dave", ["dave"], user="bob")

    assert [c["id"] for c in (await gql(client, "{ chats { id members } }", token="bob"))["data"]["chats"]] == [other, result["id"]]
    alice = (await gql(client, "{ chats { id name members } }", token="alice"))["data"]["chats"]
    assert alice == [{"id": result["id"], "name": "team", "members": ["alice", "bob", "carol"]}]
    assert (await gql(client, "{ chats { id } }", token="erin"))["data"]["chats"] == []


async def test_create_chat_bad_input(client):
    assert code(await gql(client, CREATE, {"n": "x", "m": []}, token=None)) == "UNAUTHENTICATED"
    assert code(await gql(client, CREATE, {"n": "   ", "m": ["bob"]}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, CREATE, {"n": "x" * 201, "m": ["bob"]}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, CREATE, {"n": "x", "m": [" "]}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, CREATE, {"n": "x", "m": ["u" * 201]}, token="alice")) == "BAD_USER_INPUT"
    too_many = await gql(client, CREATE, {"n": "x", "m": [f"u{i}" for i in range(1001)]}, token="alice")
    assert code(too_many) == "BAD_USER_INPUT" and "at most 1000" in too_many["errors"][0]["message"]
    # Nothing was stored by the refused calls.
    assert (await gql(client, "{ chats { id } }", token="alice"))["data"]["chats"] == []


async def test_send_message_members_only(client):
    chat = await new_chat(client)
    sent = (await gql(client, SEND, {"c": chat, "b": "hello"}, token="bob"))["data"]["sendMessage"]
    assert sent["chatId"] == chat and sent["senderId"] == "bob" and sent["body"] == "hello" and "T" in sent["createdAt"]

    outsider = await gql(client, SEND, {"c": chat, "b": "let me in"}, token="mallory")
    assert outsider["data"] is None and code(outsider) == "FORBIDDEN"
    assert outsider["errors"][0]["message"] == "not a member of this chat"
    assert code(await gql(client, SEND, {"c": chat, "b": "hi"}, token=None)) == "UNAUTHENTICATED"
    assert code(await gql(client, SEND, {"c": "999", "b": "hi"}, token="alice")) == "NOT_FOUND"
    assert code(await gql(client, SEND, {"c": "abc", "b": "hi"}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, SEND, {"c": str(2**40), "b": "hi"}, token="alice")) == "BAD_USER_INPUT"


async def test_message_body_limits(client):
    chat = await new_chat(client)
    assert code(await gql(client, SEND, {"c": chat, "b": ""}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, SEND, {"c": chat, "b": " \n\t "}, token="alice")) == "BAD_USER_INPUT"
    too_long = await gql(client, SEND, {"c": chat, "b": "é" * 4001}, token="alice")
    assert code(too_long) == "BAD_USER_INPUT" and "4000" in too_long["errors"][0]["message"]
    longest = (await gql(client, SEND, {"c": chat, "b": "é" * 4000}, token="alice"))["data"]["sendMessage"]
    assert len(longest["body"]) == 4000
    edges = (await gql(client, PAGE, {"c": chat}, token="alice"))["data"]["messages"]["edges"]
    assert [len(e["node"]["body"]) for e in edges] == [4000]


async def test_history_pages_newest_first(client):
    chat = await new_chat(client)
    other = await new_chat(client, "elsewhere")
    await gql(client, SEND, {"c": other, "b": "not in this chat"}, token="alice")
    for i in range(5):
        await gql(client, SEND, {"c": chat, "b": f"m{i}"}, token="alice" if i % 2 else "bob")

    seen, cursor, pages = [], None, 0
    while True:
        page = (await gql(client, PAGE, {"c": chat, "f": 2, "b": cursor}, token="bob"))["data"]["messages"]
        pages += 1
        seen += [e["node"]["body"] for e in page["edges"]]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        cursor = page["pageInfo"]["endCursor"]
    assert seen == ["m4", "m3", "m2", "m1", "m0"] and pages == 3

    default = (await gql(client, PAGE, {"c": chat}, token="alice"))["data"]["messages"]
    assert len(default["edges"]) == 5 and default["pageInfo"]["hasNextPage"] is False
    empty = (await gql(client, PAGE, {"c": chat, "f": 0}, token="alice"))["data"]["messages"]
    assert empty == {"edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}}
    # Past the oldest message: an empty last page.
    oldest = default["edges"][-1]["cursor"]
    assert (await gql(client, PAGE, {"c": chat, "b": oldest}, token="alice"))["data"]["messages"] == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


async def test_history_bad_input(client):
    chat = await new_chat(client)
    await gql(client, SEND, {"c": chat, "b": "secret"}, token="alice")
    forged = base64.urlsafe_b64encode(b"book:3").decode()
    for cursor in ("garbage!", "", forged, base64.urlsafe_b64encode(b"msg:-1").decode(), base64.urlsafe_b64encode(b"msg:1e99").decode()):
        result = await gql(client, PAGE, {"c": chat, "b": cursor}, token="alice")
        assert code(result) == "BAD_USER_INPUT" and "cursor" in result["errors"][0]["message"], cursor
    for first in (-1, 101):
        assert code(await gql(client, PAGE, {"c": chat, "f": first}, token="alice")) == "BAD_USER_INPUT"
    outsider = await gql(client, PAGE, {"c": chat}, token="mallory")
    assert outsider["data"] is None and code(outsider) == "FORBIDDEN"
    assert code(await gql(client, PAGE, {"c": "12345"}, token="alice")) == "NOT_FOUND"
    assert code(await gql(client, PAGE, {"c": chat}, token=None)) == "UNAUTHENTICATED"


async def test_message_received_by_members(client):
    app = client.app
    pubsub = app[keys.PUBSUB]
    chat = await new_chat(client, members=["bob", "carol"])
    elsewhere = await new_chat(client, "elsewhere")
    bob = await subscribe(app, RECEIVED, {"c": chat}, user="bob")
    carol = await subscribe(app, RECEIVED, {"c": chat}, user="carol")
    to_bob, to_carol = asyncio.ensure_future(anext(bob)), asyncio.ensure_future(anext(carol))
    await eventually(lambda: pubsub.subscriber_counts().get(f"chat.{chat}") == 2)

    await gql(client, SEND, {"c": elsewhere, "b": "wrong room"}, token="alice")
    sent = (await gql(client, SEND, {"c": chat, "b": "hello both"}, token="alice"))["data"]["sendMessage"]
    got_bob = (await asyncio.wait_for(to_bob, 5))["data"]["messageReceived"]
    got_carol = (await asyncio.wait_for(to_carol, 5))["data"]["messageReceived"]
    assert got_bob == got_carol == sent
    # Stored before it was published: history already has it.
    history = (await gql(client, PAGE, {"c": chat, "f": 1}, token="bob"))["data"]["messages"]["edges"]
    assert history[0]["node"]["id"] == got_bob["id"]

    await bob.aclose()
    await carol.aclose()
    await eventually(lambda: f"chat.{chat}" not in pubsub.subscriber_counts())


async def test_message_received_refuses_outsiders(client):
    app = client.app
    chat = await new_chat(client)
    for variables, user, expected in (
        ({"c": chat}, "mallory", "FORBIDDEN"),
        ({"c": chat}, None, "UNAUTHENTICATED"),
        ({"c": "424242"}, "alice", "NOT_FOUND"),
        ({"c": "abc"}, "alice", "BAD_USER_INPUT"),
    ):
        stream = await subscribe(app, RECEIVED, variables, user=user)
        with pytest.raises(TartifletteError) as e:
            await asyncio.wait_for(anext(stream), 5)
        assert e.value.extensions["code"] == expected, (variables, user)
        await stream.aclose()
    assert "not a chat id" in e.value.message  # the last case: chatId "abc"
    # Refused before subscribing: no pubsub subscription was ever opened.
    assert app[keys.PUBSUB].subscriber_counts() == {}


async def test_message_received_for_unknown_field_is_rejected(client):
    from plugboard.graphql.operation import OperationRejected

    with pytest.raises(OperationRejected) as e:
        await subscribe(client.app, "subscription { messageRecieved(chatId: 1) { id } }")
    assert any("messageRecieved" in error["message"] for error in e.value.errors), e.value.errors


async def test_message_received_over_websocket(make_realtime_app, aiohttp_client):
    """End to end: graphql-transport-ws on the GraphQL path, a member and an outsider on one socket each."""
    client = await aiohttp_client(make_realtime_app({"realtime": {"serverSentEvents": False, "channels": {"enabled": False}}}))
    pubsub = client.app[keys.PUBSUB]
    chat = await new_chat(client)

    bob = await TransportWS.connect(client, {"authToken": "bob"})
    mallory = await TransportWS.connect(client, {"authToken": "mallory"})
    await bob.subscribe("m", RECEIVED, {"c": chat})
    await mallory.subscribe("x", RECEIVED, {"c": chat})

    # The outsider gets a GraphQL error for the operation; the socket stays up.
    refused = await mallory.receive()
    # A source that raises is an execution error: `next` with errors, then `complete`.
    assert refused["id"] == "x" and refused["type"] == "next", refused
    assert refused["payload"]["data"] is None
    assert refused["payload"]["errors"][0]["message"] == "not a member of this chat"
    assert refused["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await mallory.receive()) == {"id": "x", "type": "complete"}
    await mallory.send({"type": "ping"})
    assert (await mallory.receive())["type"] == "pong"

    await eventually(lambda: pubsub.subscriber_counts().get(f"chat.{chat}") == 1)
    sent = (await gql(client, SEND, {"c": chat, "b": "over the socket"}, token="alice"))["data"]["sendMessage"]
    got = await bob.receive()
    assert got == {"id": "m", "type": "next", "payload": {"data": {"messageReceived": sent}}}

    await bob.complete("m")
    await eventually(lambda: f"chat.{chat}" not in pubsub.subscriber_counts())
    await bob.close()
    await mallory.close()
