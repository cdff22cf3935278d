"""Analytics: counts per template and day, the open pixel and signed click redirects, emailEvents."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest
from email_testkit import ADMIN, gql, outbox

from plugboard.plugins.email.keys import EMAIL

STATS = "query($t: String, $f: String!, $to: String!) { emailStats(template: $t, from: $f, to: $to) { template day event count } }"
NEWS = {"title": "News", "articles": [{"title": "A", "summary": "s", "url": "https://example.com/a?x=1&y=2"}]}


@pytest.fixture
async def client(make_email_app, client_for):
    app = make_email_app({"email": {"features": {"analytics": True}, "tracking": {"opens": True, "clicks": True}}})
    return await client_for(app)


async def test_stats_count_sends_opens_and_clicks(client, tmp_path):
    app = client.server.app
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    await app[EMAIL].send("bob@example.com", "newsletter", NEWS)
    await app[EMAIL].send("bob@example.com", "welcome", {"username": "Bob"})
    import email
    import email.policy

    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in outbox(tmp_path)]
    first = next(m for m in messages if m["X-Plugboard-Template"] == "newsletter")
    body = first.get_body(("html",)).get_content()
    pixel = re.search(r'src="http://127.0.0.1:8000(/email/o/[^"]+\.gif)"', body).group(1)
    link = re.search(r'href="http://127.0.0.1:8000(/email/c/[^"]+)"', body).group(1)
    assert "/email/unsubscribe/" in body  # the unsubscribe link is not rewritten
    opened = await client.get(pixel)
    assert opened.status == 200 and opened.content_type == "image/gif"
    clicked = await client.get(link, allow_redirects=False)
    assert clicked.status == 302 and clicked.headers["Location"] == "https://example.com/a?x=1&y=2"
    forged = await client.get(link[:-3] + "abc", allow_redirects=False)
    assert forged.status == 400
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    answer = await gql(client, STATS, {"f": today, "to": today})
    counts = {(s["template"], s["event"]): s["count"] for s in answer["data"]["emailStats"]}
    assert counts == {("newsletter", "sent"): 2, ("newsletter", "opened"): 1, ("newsletter", "clicked"): 1, ("welcome", "sent"): 1}
    only = await gql(client, STATS, {"t": "welcome", "f": today, "to": today})
    assert [s["event"] for s in only["data"]["emailStats"]] == ["sent"]
    bad = await gql(client, STATS, {"f": "yesterday", "to": today})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    denied = await gql(client, STATS, {"f": today, "to": today}, admin=False)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_tracking_is_off_by_default(make_email_app, client_for, tmp_path):
    client = await client_for(make_email_app({"email": {"features": {"analytics": True}}}))
    await client.server.app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    text = outbox(tmp_path)[0].read_text()
    assert "/email/o/" not in text and "/email/c/" not in text
    assert (await client.get("/email/o/x.gif")).status == 404
    off = await client_for(make_email_app({"server": {"data_dir": str(tmp_path / "v2")}}))
    answer = await gql(off, STATS, {"f": "2026-01-01", "to": "2026-01-02"})
    assert answer["errors"][0]["extensions"]["code"] == "FEATURE_DISABLED"


async def test_email_events_subscription(make_email_app, client_for):
    client = await client_for(make_email_app({"email": {"features": {"analytics": True}}}, ["realtime", "email"]))
    ws = await client.ws_connect("/graphql", protocols=["graphql-transport-ws"])
    await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {ADMIN}"}})
    assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
    await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "subscription { emailEvents { event address template provider } }"}})
    await asyncio.sleep(0.2)
    await client.server.app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"})
    message = await ws.receive_json(timeout=5)
    assert message["type"] == "next"
    assert message["payload"]["data"]["emailEvents"] == {"event": "sent", "address": "ann@example.com", "template": "welcome", "provider": "plugboard"}
    await ws.close()
    # Not for non-admins.
    ws = await client.ws_connect("/graphql", protocols=["graphql-transport-ws"])
    await ws.send_json({"type": "connection_init", "payload": {}})
    await ws.receive_json(timeout=5)
    await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "subscription { emailEvents { event } }"}})
    message = await ws.receive_json(timeout=5)
    assert message["type"] == "error" or "errors" in message.get("payload", {})
    await ws.close()
