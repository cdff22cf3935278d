"""Notifications: notify() for plugins, the notifications query, mark-read, notificationReceived."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard import keys
from plugboard.testing import eventually, gql
from realtime_testkit import code, subscribe
from plugboard.plugins.realtime.notifications import notify

ISOLATED = {"websockets": False, "serverSentEvents": False, "channels": {"enabled": False}}

FIELDS = "id userId kind title body data createdAt readAt read"
LIST = f"query($u: Boolean, $f: Int) {{ notifications(unreadOnly: $u, first: $f) {{ {FIELDS} }} }}"
MARK = f"mutation($id: ID!) {{ markNotificationRead(id: $id) {{ {FIELDS} }} }}"
MARK_ALL = "mutation { markAllNotificationsRead }"
RECEIVED = f"subscription($u: ID!) {{ notificationReceived(userId: $u) {{ {FIELDS} }} }}"


@pytest.fixture
async def client(make_realtime_app, aiohttp_client):
    return await aiohttp_client(make_realtime_app({"realtime": ISOLATED}))


async def test_notify_stores_and_lists_mine(client):
    app = client.app
    first = await notify(app, "alice", kind="order.shipped", title="Shipped", body="Your order left", data={"order": 42, "items": ["a"]})
    assert first["id"] and first["read"] is False and first["readAt"] is None
    assert isinstance(first["createdAt"], dt.datetime)
    await notify(app, "bob", kind="chat.mention", title="for bob")
    second = await notify(app, "alice", kind="chat.mention", title="Mentioned")

    mine = (await gql(client, LIST, token="alice"))["data"]["notifications"]
    assert [n["id"] for n in mine] == [second["id"], first["id"]]  # newest first
    assert mine[1] == {
        "id": first["id"],
        "userId": "alice",
        "kind": "order.shipped",
        "title": "Shipped",
        "body": "Your order left",
        "data": {"order": 42, "items": ["a"]},
        "createdAt": mine[1]["createdAt"],
        "readAt": None,
        "read": False,
    }
    assert dt.datetime.fromisoformat(mine[1]["createdAt"]) == first["createdAt"]
    assert mine[0]["body"] == "" and mine[0]["data"] is None
    assert [n["title"] for n in (await gql(client, LIST, token="bob"))["data"]["notifications"]] == ["for bob"]
    assert [n["id"] for n in (await gql(client, LIST, {"f": 1}, token="alice"))["data"]["notifications"]] == [second["id"]]


async def test_notify_refuses_bad_arguments(client):
    app = client.app
    for user_id, kwargs, message in (
        ("", {"kind": "k", "title": "t"}, "user_id must not be empty"),
        (42, {"kind": "k", "title": "t"}, "user_id must be a string"),
        ("alice", {"kind": " ", "title": "t"}, "kind must not be empty"),
        ("alice", {"kind": "k", "title": ""}, "title must not be empty"),
        ("alice", {"kind": "k", "title": "t" * 501}, "title is at most 500"),
        ("alice", {"kind": "k", "title": "t", "body": None}, "body must be a string"),
        ("alice", {"kind": "k", "title": "t", "data": ["not", "a", "dict"]}, "data must be a dict"),
        ("alice", {"kind": "k", "title": "t", "data": {"when": dt.datetime.now()}}, "JSON-serializable"),
        ("alice", {"kind": "k", "title": "t", "data": {"x": float("nan")}}, "JSON-serializable"),
    ):
        with pytest.raises(ValueError) as e:
            await notify(app, user_id, **kwargs)
        assert message in str(e.value), (user_id, kwargs)
    assert (await gql(client, LIST, token="alice"))["data"]["notifications"] == []


async def test_mark_read(client):
    app = client.app
    one = await notify(app, "alice", kind="k", title="one")
    two = await notify(app, "alice", kind="k", title="two")
    bobs = await notify(app, "bob", kind="k", title="bob's")

    marked = (await gql(client, MARK, {"id": one["id"]}, token="alice"))["data"]["markNotificationRead"]
    assert marked["read"] is True and marked["readAt"] is not None
    # Idempotent: a second call keeps the first read time.
    again = (await gql(client, MARK, {"id": one["id"]}, token="alice"))["data"]["markNotificationRead"]
    assert again["readAt"] == marked["readAt"]
    unread = (await gql(client, LIST, {"u": True}, token="alice"))["data"]["notifications"]
    assert [n["id"] for n in unread] == [two["id"]]

    # Someone else's notification is answered as if it did not exist.
    other = await gql(client, MARK, {"id": bobs["id"]}, token="alice")
    assert other["data"] is None and code(other) == "NOT_FOUND"
    assert (await gql(client, LIST, token="bob"))["data"]["notifications"][0]["read"] is False
    assert code(await gql(client, MARK, {"id": "99999"}, token="alice")) == "NOT_FOUND"
    assert code(await gql(client, MARK, {"id": "abc"}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, MARK, {"id": str(2**40)}, token="alice")) == "BAD_USER_INPUT"
    assert code(await gql(client, MARK, {"id": one["id"]}, token=None)) == "UNAUTHENTICATED"

    assert (await gql(client, MARK_ALL, token="alice"))["data"]["markAllNotificationsRead"] == 1
    assert (await gql(client, MARK_ALL, token="alice"))["data"]["markAllNotificationsRead"] == 0
    assert (await gql(client, LIST, {"u": True}, token="alice"))["data"]["notifications"] == []
    assert (await gql(client, LIST, {"u": True}, token="bob"))["data"]["notifications"][0]["id"] == bobs["id"]
    assert code(await gql(client, MARK_ALL, token=None)) == "UNAUTHENTICATED"


async def test_list_bad_input(client):
    for first in (-1, 101):
        result = await gql(client, LIST, {"f": first}, token="alice")
        assert result["data"] is None and code(result) == "BAD_USER_INPUT"
    assert code(await gql(client, LIST, token=None)) == "UNAUTHENTICATED"


async def test_notification_received_only_by_its_user(client):
    app = client.app
    pubsub = app[keys.PUBSUB]
    stream = await subscribe(app, RECEIVED, {"u": "alice"}, user="alice")
    pending = asyncio.ensure_future(anext(stream))
    await eventually(lambda: pubsub.subscriber_counts().get("notifications.alice") == 1)

    await notify(app, "bob", kind="k", title="not for alice")
    sent = await notify(app, "alice", kind="invite", title="Join us", data={"chat": "7"})
    got = (await asyncio.wait_for(pending, 5))["data"]["notificationReceived"]
    assert got["id"] == sent["id"] and got["title"] == "Join us" and got["data"] == {"chat": "7"}
    assert got["read"] is False and dt.datetime.fromisoformat(got["createdAt"]) == sent["createdAt"]
    await stream.aclose()
    await eventually(lambda: "notifications.alice" not in pubsub.subscriber_counts())

    for user, expected in (("mallory", "FORBIDDEN"), (None, "UNAUTHENTICATED")):
        refused = await subscribe(app, RECEIVED, {"u": "alice"}, user=user)
        with pytest.raises(TartifletteError) as e:
            await asyncio.wait_for(anext(refused), 5)
        assert e.value.extensions["code"] == expected
        await refused.aclose()
    assert pubsub.subscriber_counts() == {}
