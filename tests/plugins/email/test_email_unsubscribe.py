"""RFC 8058 one-click unsubscribe (RFC 2369 headers) and DKIM signing that covers them."""

from __future__ import annotations

import base64
import email
import email.policy
import re

import pytest
from email_testkit import outbox

from plugboard.errors import ConfigError
from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.service import EmailError

NEWS = {"title": "News", "articles": []}


def read(path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


@pytest.fixture
async def client(make_email_app, client_for):
    return await client_for(make_email_app({"email": {"unsubscribe": {"mailto": "unsubscribe@example.com"}, "features": {"analytics": True}}}))


def token_url(message) -> str:
    value = str(message["List-Unsubscribe"])
    return re.search(r"<(https?://[^>]+)>", value).group(1)


async def test_newsletter_carries_list_unsubscribe_and_transactional_does_not(client, tmp_path):
    app = client.server.app
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    await app[EMAIL].send("ann@example.com", "password-reset", {"username": "Ann", "resetLink": "https://x.example/r"})
    await app[EMAIL].send("ann@example.com", "verification", {"username": "Ann"})
    news, reset, verification = (read(p) for p in outbox(tmp_path))
    assert news["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    value = str(news["List-Unsubscribe"])
    assert value.startswith("<http://127.0.0.1:8000/email/unsubscribe/") and "<mailto:unsubscribe@example.com?subject=unsubscribe%20newsletter>" in value
    assert news["List-Id"] == "<newsletter.localhost>"
    for message in (reset, verification):
        assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


async def test_get_confirms_post_unsubscribes_idempotently(client, tmp_path):
    app = client.server.app
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    path = token_url(read(outbox(tmp_path)[0])).removeprefix("http://127.0.0.1:8000")
    page = await client.get(path)
    assert page.status == 200 and "Unsubscribe" in await page.text() and 'method="post"' in await page.text()
    # A GET (a link scanner) never unsubscribes.
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    # The RFC 8058 POST: no login, no cookie, form body List-Unsubscribe=One-Click.
    done = await client.post(path, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status == 200 and "will get no more" in await done.text()
    twice = await client.post(path, data="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert twice.status == 200
    with pytest.raises(EmailError, match="unsubscribed from newsletter") as e:
        await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    assert e.value.code == "EMAIL_SUPPRESSED"
    # Other (transactional) mail still goes out.
    await app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"})
    rows = await app[EMAIL].suppressions()
    assert [(r.address, r.scope, r.reason) for r in rows] == [("ann@example.com", "newsletter", "unsubscribe")]
    from email_testkit import events

    assert [e.event for e in await events(app)].count("unsubscribed") == 1


@pytest.mark.parametrize("case", ["forged", "altered", "garbage", "other-purpose"])
async def test_forged_or_altered_tokens_are_refused(client, tmp_path, case):
    app = client.server.app
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    token = token_url(read(outbox(tmp_path)[0])).rsplit("/", 1)[1]
    payload, signature = token.split(".")
    if case == "forged":
        fake = base64.urlsafe_b64encode(b'{"a":"victim@example.com","iat":1,"l":"newsletter"}').rstrip(b"=").decode()
        token = f"{fake}.{signature}"
    elif case == "altered":
        token = f"{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    elif case == "garbage":
        token = "not-a-token"
    elif case == "other-purpose":
        token = app[EMAIL].signer.sign("click", {"a": "ann@example.com", "l": "newsletter"})
    for method in ("GET", "POST"):
        response = await client.request(method, f"/email/unsubscribe/{token}")
        assert response.status == 400 and "not valid" in await response.text()
    assert await app[EMAIL].suppressions() == []


def dkim_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(public)


DKIM = {"selector": "pb", "domain": "example.com", "private_key_file": "dkim.pem"}


async def test_dkim_signature_covers_list_unsubscribe_through_smtp(make_email_app, start_app, smtp_server, tmp_path):
    import dkim

    public = dkim_key(tmp_path)
    app = await start_app(make_email_app({
        "services": {"mailer": {"provider": "smtp", "host": smtp_server.host, "port": smtp_server.port, "starttls": False}},
        "email": {"from_address": "News <news@example.com>", "dkim": DKIM},
    }))
    await app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    [raw] = smtp_server.handler.raw

    def dns(name, timeout=5):
        assert name == b"pb._domainkey.example.com."
        return b"v=DKIM1; k=rsa; p=" + public

    assert dkim.verify(raw, dnsfunc=dns)
    signature = email.message_from_bytes(raw, policy=email.policy.default)["DKIM-Signature"]
    signed = re.search(r"h=([^;]+)", str(signature).replace(" ", "").replace("\r\n", "")).group(1).lower().split(":")
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
    # Altering a signed header breaks the signature.
    assert not dkim.verify(raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing"), dnsfunc=dns)


def test_start_up_says_when_dkim_would_not_cover_the_unsubscribe_headers(make_email_app, tmp_path):
    dkim_key(tmp_path)
    with pytest.raises(ConfigError, match=r"email.dkim.headers.*would not cover List-Unsubscribe, List-Unsubscribe-Post"):
        make_email_app({"email": {"dkim": {**DKIM, "headers": ["From", "To", "Subject"]}}})
    with pytest.raises(ConfigError, match="cannot read the DKIM private key"):
        make_email_app({"email": {"dkim": {**DKIM, "private_key_file": "missing.pem"}}})
    with pytest.raises(ConfigError, match="needs the private key file"):
        make_email_app({"email": {"dkim": {"selector": "pb", "domain": "example.com"}}})
    with pytest.raises(ConfigError, match="transactional"):
        make_email_app({"email": {"unsubscribe": {"templates": ["newsletter", "password-reset"]}}})


async def test_order_confirmation_carries_unsubscribe_only_when_configured(make_email_app, start_app, tmp_path):
    order = {"username": "Ann", "orderNumber": "A-1", "items": [], "total": "$0"}
    app = await start_app(make_email_app())
    await app[EMAIL].send("ann@example.com", "order-confirmation", order)
    assert read(outbox(tmp_path)[-1])["List-Unsubscribe"] is None
    other = tmp_path / "other"
    other.mkdir()
    app = await start_app(make_email_app({"server": {"data_dir": str(other / "var")}, "email": {"unsubscribe": {"templates": ["newsletter", "order-confirmation"]}}}))
    await app[EMAIL].send("ann@example.com", "order-confirmation", order)
    [path] = sorted((other / "var" / "outbox").glob("*.eml"))
    message = read(path)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and "order-confirmation" in message["List-Id"]


async def test_unsubscribe_is_off_with_the_feature(make_email_app, client_for, tmp_path):
    client = await client_for(make_email_app({"email": {"features": {"unsubscribe": False}}}))
    await client.server.app[EMAIL].send("ann@example.com", "newsletter", NEWS)
    assert read(outbox(tmp_path)[0])["List-Unsubscribe"] is None
    assert (await client.post("/email/unsubscribe/x.y")).status == 404


async def test_a_replaced_dkim_key_is_used_without_a_restart(make_email_app, start_app, smtp_server, tmp_path, caplog):
    import os

    import dkim

    old = dkim_key(tmp_path)
    app = await start_app(make_email_app({
        "services": {"mailer": {"provider": "smtp", "host": smtp_server.host, "port": smtp_server.port, "starttls": False}},
        "email": {"from_address": "News <news@example.com>", "dkim": DKIM},
    }))
    published = {"p": old}

    def dns(name, timeout=5):
        return b"v=DKIM1; k=rsa; p=" + published["p"]

    await app[EMAIL].send("ann@example.com", "welcome", {"username": "Ann"})
    # Rotate under the same selector: a new key file (atomically renamed into place) and its DNS record.
    staged = tmp_path / "dkim.pem"
    os.replace(staged, tmp_path / "old.pem")
    new = dkim_key(tmp_path)
    published["p"] = new
    await app[EMAIL].send("bob@example.com", "welcome", {"username": "Bob"})
    first, second = smtp_server.handler.raw
    assert not dkim.verify(first, dnsfunc=dns) and dkim.verify(second, dnsfunc=dns)
    # A replacement that is not a key (half written) is refused loudly; the last good key signs on.
    staged.write_bytes(b"-----BEGIN")
    await app[EMAIL].send("cy@example.com", "welcome", {"username": "Cy"})
    assert dkim.verify(smtp_server.handler.raw[2], dnsfunc=dns)
    assert "DKIM key file changed but" in caplog.text
