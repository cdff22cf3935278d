"""The GraphQL surface: templates CRUD, preview, sendEmail and its bad inputs, suppression, access."""

from __future__ import annotations

import email
import email.policy

import pytest
from email_testkit import gql, outbox

MJML = '{% extends "base.mjml" %}{% block content %}<mj-text>Hi {{ name }}</mj-text>{% endblock %}'
CREATE = "mutation($i: EmailTemplateInput!) { createEmailTemplate(input: $i) { id name subject content builtin list } }"
SEND = "mutation($to: String!, $t: ID!, $v: JSON, $k: String) { sendEmail(to: $to, templateId: $t, variables: $v, idempotencyKey: $k) }"


@pytest.fixture
async def client(make_email_app, client_for):
    return await client_for(make_email_app())


async def test_templates_crud_and_preview(client):
    listed = await gql(client, "{ emailTemplates { id name builtin list } }")
    names = [t["name"] for t in listed["data"]["emailTemplates"]]
    assert names == ["welcome", "password-reset", "verification", "order-confirmation", "newsletter"]
    assert {t["name"]: t["list"] for t in listed["data"]["emailTemplates"]}["newsletter"] == "newsletter"
    created = await gql(client, CREATE, {"i": {"name": "hello", "subject": "Hello {{ name }}", "content": MJML}})
    template = created["data"]["createEmailTemplate"]
    assert template["name"] == "hello" and template["builtin"] is False and template["list"] is None
    preview = await gql(client, "query($id: ID!) { previewEmailTemplate(id: $id, variables: {name: \"Bo\"}) { subject html text } }", {"id": template["id"]})
    assert preview["data"]["previewEmailTemplate"]["subject"] == "Hello Bo"
    assert "Hi Bo" in preview["data"]["previewEmailTemplate"]["text"]
    updated = await gql(client, "mutation($id: ID!) { updateEmailTemplate(id: $id, input: {subject: \"Hey {{ name }}\"}) { id subject content } }", {"id": template["id"]})
    assert updated["data"]["updateEmailTemplate"]["subject"] == "Hey {{ name }}"
    assert updated["data"]["updateEmailTemplate"]["content"] == MJML
    by_name = await gql(client, "{ previewEmailTemplate(id: \"hello\", variables: {name: \"Cy\"}) { subject } }")
    assert by_name["data"]["previewEmailTemplate"]["subject"] == "Hey Cy"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"content": "{% if %}<mjml></mjml>"}, "syntax error on line 1"),
        ({"content": "<mjml><mj-body><mj-section>"}, "not valid MJML"),
        ({"subject": "Hi {{ name "}, "syntax error"),
        ({"subject": "Hi\r\nBcc: evil@example.com"}, "line breaks"),
        ({"name": "welcome"}, "built-in template"),
        ({"name": "has space"}, "without spaces"),
        ({"content": '{% extends "nope.mjml" %}'}, "'nope.mjml', which does not exist"),
        ({"content": '{% extends "../../../etc/passwd" %}'}, "does not exist"),
        ({"content": "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"}, "longer than 2s and was stopped"),
        ({"content": "<mjml><mj-body>{{ ''.__class__ }}</mj-body></mjml>"}, "not allowed"),
    ],
)
async def test_create_refuses_bad_templates(client, fields, message):
    data = {"name": "t1", "subject": "s", "content": MJML, **fields}
    answer = await gql(client, CREATE, {"i": data})
    assert answer["data"] is None or answer["data"].get("createEmailTemplate") is None
    assert message in answer["errors"][0]["message"]
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_duplicate_names_and_builtins_are_not_editable(client):
    await gql(client, CREATE, {"i": {"name": "dup", "subject": "s", "content": MJML}})
    again = await gql(client, CREATE, {"i": {"name": "dup", "subject": "s", "content": MJML}})
    assert "exists" in again["errors"][0]["message"]
    builtin = await gql(client, "mutation { updateEmailTemplate(id: \"welcome\", input: {subject: \"x\"}) { id } }")
    assert "built-in" in builtin["errors"][0]["message"]


async def test_only_admins_manage_templates_and_send(client):
    for query in ("{ emailTemplates { id } }", "{ emailSuppressions { address } }"):
        answer = await gql(client, query, admin=False)
        assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    answer = await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}}, admin=False)
    assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    answer = await gql(client, CREATE, {"i": {"name": "x", "subject": "s", "content": MJML}}, admin=False)
    assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_send_email_without_jobs_sends_in_the_request(client, tmp_path):
    answer = await gql(client, SEND, {"to": "Ann <ann@example.com>", "t": "welcome", "v": {"username": "Ann"}})
    assert answer == {"data": {"sendEmail": True}}
    [path] = outbox(tmp_path)
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ann@example.com" and message["Subject"] == "Welcome, Ann!"
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None


@pytest.mark.parametrize(
    "to, message",
    [
        ("not-an-address", "is not an email address"),
        ("a@example.com, b@example.com", "one address, not several"),
        ("a@example.com; b@example.com", "one address, not several"),
        ("a@example.com\r\nBcc: evil@example.com", "line breaks"),
        ("", "expected one email address"),
        ("a@b", "is not an email address"),
    ],
)
async def test_send_email_refuses_bad_addresses(client, tmp_path, to, message):
    answer = await gql(client, SEND, {"to": to, "t": "welcome", "v": {"username": "A"}})
    assert message in answer["errors"][0]["message"]
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert outbox(tmp_path) == []


@pytest.mark.parametrize(
    "template, variables, message, code",
    [
        ("welcome", {}, "missing variable: 'username' is undefined", "BAD_USER_INPUT"),
        ("nope", {}, "no email template 'nope'", "NOT_FOUND"),
        ("welcome", {"username": "x" * 70000}, "more than 65536", "PAYLOAD_TOO_LARGE"),
        ("newsletter", {"title": "a\nBcc: evil@example.com", "articles": []}, "line break", "BAD_USER_INPUT"),
    ],
)
async def test_send_email_refuses_bad_variables(client, tmp_path, template, variables, message, code):
    answer = await gql(client, SEND, {"to": "a@example.com", "t": template, "v": variables})
    assert message in answer["errors"][0]["message"]
    assert answer["errors"][0]["extensions"]["code"] == code
    assert outbox(tmp_path) == []


async def test_unsafe_template_created_by_an_admin_cannot_escape(client):
    created = await gql(client, CREATE, {"i": {"name": "evil", "subject": "s", "content": "<mjml><mj-body><mj-section><mj-column><mj-text>{{ ''.__class__.__mro__ }}</mj-text></mj-column></mj-section></mj-body></mjml>"}})
    assert "not allowed" in created["errors"][0]["message"]


async def test_per_recipient_cap(make_email_app, client_for, tmp_path):
    client = await client_for(make_email_app({"email": {"per_recipient_limit": 2}}))
    for _ in range(2):
        assert (await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}}))["data"]["sendEmail"] is True
    answer = await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}})
    assert answer["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    assert (await gql(client, SEND, {"to": "b@example.com", "t": "welcome", "v": {"username": "B"}}))["data"]["sendEmail"] is True
    assert len(outbox(tmp_path)) == 3


async def test_same_idempotency_key_sends_once(client, tmp_path):
    for _ in range(3):
        answer = await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}, "k": "signup-42"})
        assert answer["data"]["sendEmail"] is True
    assert len(outbox(tmp_path)) == 1


async def test_suppression_list_admin(client, make_email_app):
    app = client.server.app
    from plugboard.plugins.email.keys import EMAIL

    await app[EMAIL].suppress("a@example.com", "*", "bounced-hard", "550 no such user")
    answer = await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}})
    assert answer["errors"][0]["extensions"]["code"] == "EMAIL_SUPPRESSED"
    assert "suppressed (bounced-hard)" in answer["errors"][0]["message"]
    listed = await gql(client, "{ emailSuppressions { address scope reason detail createdAt } }")
    assert listed["data"]["emailSuppressions"][0]["address"] == "a@example.com"
    removed = await gql(client, "mutation { removeEmailSuppression(address: \"a@example.com\") }")
    assert removed["data"]["removeEmailSuppression"] is True
    again = await gql(client, "mutation { removeEmailSuppression(address: \"a@example.com\") }")
    assert again["data"]["removeEmailSuppression"] is False
    assert (await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}}))["data"]["sendEmail"] is True


async def test_authenticated_send_access(make_email_app, client_for):
    client = await client_for(make_email_app({"email": {"send_access": "authenticated"}}))
    answer = await gql(client, SEND, {"to": "a@example.com", "t": "welcome", "v": {"username": "A"}}, admin=False)
    assert answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
