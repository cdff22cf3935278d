"""Rendering: the built-in templates, the text part, the cache, and every bad template input."""

from __future__ import annotations

import time

import pytest

from email_testkit import VARIABLES

from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.service import EmailError
from plugboard.plugins.email.templates import Renderer, TemplateError, html_to_text

SUBJECTS = {
    "welcome": "Welcome, Ann!",
    "password-reset": "Reset your password",
    "verification": "Confirm your email address",
    "order-confirmation": "Your order A-17 is confirmed",
    "newsletter": "Spring news",
}


def wrap(text: str) -> str:
    return f"<mjml><mj-body><mj-section><mj-column><mj-text>{text}</mj-text></mj-column></mj-section></mj-body></mjml>"


@pytest.fixture
def renderer():
    return Renderer(templates_dir=None, timeout=0.5, cache_size=16)


@pytest.mark.parametrize("name", list(VARIABLES))
async def test_builtin_templates_render(make_email_app, start_app, name):
    app = await start_app(make_email_app())
    rendered = await app[EMAIL].preview(name, VARIABLES[name])
    assert rendered.subject == SUBJECTS[name]
    assert rendered.html.startswith("<!doctype html>") and "Plugboard" in rendered.html
    assert "<mj-" not in rendered.html
    # The text part: readable, links spelt out, no markup or CSS.
    assert "<" not in rendered.text and "{" not in rendered.text
    for value in VARIABLES[name].values():
        if isinstance(value, str) and value.startswith("https://"):
            assert f"({value})" in rendered.text


async def test_newsletter_preview_carries_the_unsubscribe_link(make_email_app, start_app):
    app = await start_app(make_email_app())
    rendered = await app[EMAIL].preview("newsletter", VARIABLES["newsletter"])
    assert "/email/unsubscribe/" in rendered.html and "Unsubscribe (http://127.0.0.1:8000/email/unsubscribe/" in rendered.text
    reset = await app[EMAIL].preview("password-reset", VARIABLES["password-reset"])
    assert "unsubscribe" not in reset.html.lower()


async def test_switched_off_templates_are_unknown(make_email_app, start_app):
    app = await start_app(make_email_app({"email": {"templates": {"newsletter": False}}}))
    with pytest.raises(EmailError, match="no email template 'newsletter'"):
        await app[EMAIL].preview("newsletter", {})


async def test_templates_dir_overrides_base_and_adds_templates(make_email_app, start_app, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "base.mjml").write_text(
        '<mjml><mj-body><mj-section><mj-column><mj-text>ACME LAYOUT</mj-text>{% block content %}{% endblock %}</mj-column></mj-section></mj-body></mjml>'
    )
    (folder / "invoice.mjml").write_text('{% extends "base.mjml" %}{% block subject %}Invoice {{ n }}{% endblock %}{% block content %}<mj-text>Invoice {{ n }}</mj-text>{% endblock %}')
    app = await start_app(make_email_app({"email": {"templates_dir": "mail"}}))
    welcome = await app[EMAIL].preview("welcome", {"username": "Ann"})
    assert "ACME LAYOUT" in welcome.html
    invoice = await app[EMAIL].preview("invoice", {"n": 7})
    assert invoice.subject == "Invoice 7" and "Invoice 7" in invoice.text


async def test_a_broken_override_stops_start_up(make_email_app, start_app, tmp_path):
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "welcome.mjml").write_text("{% block content %}<mj-text>{{ oops }</mj-text>{% endblock %}")
    with pytest.raises(Exception, match="template 'welcome'.*syntax error"):
        await start_app(make_email_app({"email": {"templates_dir": "mail"}}))


def test_unsafe_attributes_are_refused(renderer):
    for source in ("{{ ''.__class__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__ }}"):
        with pytest.raises(TemplateError, match="not allowed|unsafe|undefined"):
            renderer.render("s", wrap(source), {})


def test_a_runaway_template_is_stopped(renderer):
    started = time.monotonic()
    with pytest.raises(TemplateError, match="longer than 0.5s"):
        renderer.render("s", wrap("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"), {})
    assert time.monotonic() - started < 3
    with pytest.raises(TemplateError, match="repetition too large"):
        renderer.render("s", wrap("{{ 'a' * 1000000000 }}"), {})
    with pytest.raises(TemplateError, match="exponent"):
        renderer.render("s", wrap("{{ 10 ** 10000000 }}"), {})


def test_missing_variable_and_syntax_errors(renderer):
    with pytest.raises(TemplateError, match="missing variable: 'name' is undefined"):
        renderer.render("Hi {{ name }}", wrap("x"), {})
    with pytest.raises(TemplateError, match="missing variable"):
        renderer.render("s", wrap("{{ user.name }}"), {"user": {}})
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        renderer.check("s", wrap("{% if %}"))
    with pytest.raises(TemplateError, match="not valid MJML"):
        renderer.check("s", "<mjml><mj-body><mj-section>")
    with pytest.raises(TemplateError, match="line break"):
        renderer.render("{{ s }}", wrap("x"), {"s": "a\r\nBcc: evil@example.com"})


def test_variables_are_html_escaped(renderer):
    rendered = renderer.render("s", wrap("{{ v }}"), {"v": "<script>alert(1)</script>"})
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html


def test_compiled_templates_and_layouts_are_cached(renderer):
    source = wrap("Hello {{ name }}")
    renderer.render("s", source, {"name": "a"})
    template = renderer._compiled[(id(renderer.body_env), source)]
    renderer.render("s", source, {"name": "b"})
    assert renderer._compiled[(id(renderer.body_env), source)] is template
    assert len(renderer._html) == 2
    renderer.render("s", source, {"name": "a"})
    assert len(renderer._html) == 2


def test_html_to_text():
    text = html_to_text('<html><head><style>p{color:red}</style></head><body><div style="display:none">pre</div><p>One <a href="https://x.example/">link</a></p><p>Two</p></body></html>')
    assert text == "One link (https://x.example/)\n\nTwo\n"


async def test_oversized_variables_and_unknown_template(make_email_app, start_app):
    app = await start_app(make_email_app({"email": {"max_variables_size": "1KB"}}))
    with pytest.raises(EmailError, match="more than 1024") as e:
        await app[EMAIL].preview("welcome", {"username": "x" * 2000})
    assert e.value.code == "PAYLOAD_TOO_LARGE"
    with pytest.raises(EmailError, match="no email template 'nope'") as e:
        await app[EMAIL].preview("nope", {})
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(EmailError, match="expected a JSON object"):
        await app[EMAIL].preview("welcome", ["a"])
