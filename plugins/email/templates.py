"""Rendering: Jinja2 (sandboxed, StrictUndefined) fills variables into MJML, mjml-python lays it out.

A template is a subject (plain-text Jinja) and a body: Jinja producing MJML,
usually ``{% extends "base.mjml" %}`` with a ``content`` block. Templates
created through the API are untrusted: the :class:`~jinja2.sandbox.SandboxedEnvironment`
refuses unsafe attributes (``''.__class__``), a tracer stops a render that runs
longer than ``render_timeout``, and string/list repetition is capped. Compiled
Jinja templates and the MJML-to-HTML result of identical MJML are cached (LRU).
The plain-text part is generated from the HTML.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections import OrderedDict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Mapping

import attrs
import jinja2
from jinja2.sandbox import SandboxedEnvironment

BUILTIN_DIR = Path(__file__).with_name("templates")
#: The built-in templates (file stem), and the switch of ``email.templates`` that enables each.
BUILTINS = {
    "welcome": "welcome",
    "password-reset": "password_reset",
    "verification": "verification",
    "order-confirmation": "order_confirmation",
    "newsletter": "newsletter",
}
#: Never carry List-Unsubscribe: a recipient must get these whatever they opted out of.
TRANSACTIONAL = frozenset({"password-reset", "verification"})
MAX_OUTPUT = 2_000_000
MAX_REPEAT = 100_000


class TemplateError(Exception):
    """A template cannot be compiled or rendered; the message is safe to show an admin or client."""


@attrs.define(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


class _Deadline(Exception):
    """Raised by the render tracer when a template runs past ``render_timeout``."""


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus caps on ``*`` (``'a' * 10**9``) and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Fail at once, also in the lenient checks at creation (whose
        # undefined values would otherwise render as nothing).
        raise jinja2.sandbox.SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > 100:
                raise jinja2.sandbox.SecurityError("exponent too large")
            return left**right
        for a, b in ((left, right), (right, left)):
            if isinstance(a, (str, list, tuple)) and isinstance(b, int) and len(a) * b > MAX_REPEAT:
                raise jinja2.sandbox.SecurityError("repetition too large")
        return left * right


class Renderer:
    """Compiles and renders templates; one per app (``EmailService.renderer``)."""

    def __init__(self, *, templates_dir: Path | None, timeout: float, cache_size: int) -> None:
        dirs = [str(templates_dir)] if templates_dir else []
        loader = jinja2.FileSystemLoader([*dirs, str(BUILTIN_DIR)])
        self.timeout = timeout
        self.cache_size = cache_size
        self.body_env = _Sandbox(loader=loader, undefined=jinja2.StrictUndefined, autoescape=True, auto_reload=False)
        self.subject_env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False)
        # Syntax and layout checks at creation render with every variable empty.
        self.lenient_env = _Sandbox(loader=loader, undefined=jinja2.ChainableUndefined, autoescape=True)
        self.lenient_subject_env = _Sandbox(undefined=jinja2.ChainableUndefined, autoescape=False)
        self._compiled: OrderedDict[tuple[int, str], jinja2.Template] = OrderedDict()
        self._html: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.templates_dir = templates_dir

    # -- sources -------------------------------------------------------------------

    def file_source(self, name: str) -> tuple[str, str]:
        """(subject, body) of a file template ``<name>.mjml``: the subject is its ``subject`` block."""
        source, _, _ = self.body_env.loader.get_source(self.body_env, f"{name}.mjml")
        match = re.search(r"{%-?\s*block\s+subject\s*-?%}(.*?){%-?\s*endblock", source, re.S)
        return (match.group(1).strip() if match else name), source

    def has_file(self, name: str) -> bool:
        try:
            self.body_env.loader.get_source(self.body_env, f"{name}.mjml")
        except jinja2.TemplateNotFound:
            return False
        return True

    # -- compile -------------------------------------------------------------------

    def _compile(self, env: SandboxedEnvironment, source: str) -> jinja2.Template:
        key = (id(env), source)
        template = self._compiled.get(key)
        if template is not None:
            self._compiled.move_to_end(key)
            return template
        try:
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"template syntax error on line {e.lineno}: {e.message}") from None
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"the template extends or includes {e.name!r}, which does not exist") from None
        self._compiled[key] = template
        if len(self._compiled) > self.cache_size:
            self._compiled.popitem(last=False)
        return template

    def check(self, subject: str, content: str) -> None:
        """Compile both parts and lay the body out with empty variables; TemplateError says what is wrong."""
        if "\r" in subject or "\n" in subject:
            raise TemplateError("subject: line breaks are not allowed")
        self._compile(self.lenient_subject_env, subject)
        body = self._compile(self.lenient_env, content)
        mjml = self._run(body, {})
        self.mjml_to_html(mjml)

    # -- render --------------------------------------------------------------------

    def render(self, subject: str, content: str, variables: Mapping[str, Any]) -> Rendered:
        """Render a (subject, MJML body) pair with ``variables``; TemplateError on any problem."""
        subject_text = self._run(self._compile(self.subject_env, subject), variables).strip()
        if "\r" in subject_text or "\n" in subject_text:
            raise TemplateError("the rendered subject contains a line break")
        mjml = self._run(self._compile(self.body_env, content), variables)
        html, text = self.mjml_to_html(mjml)
        return Rendered(subject=subject_text, html=html, text=text)

    def _run(self, template: jinja2.Template, variables: Mapping[str, Any]) -> str:
        deadline = time.monotonic() + self.timeout
        env = template.environment

        def local(frame: Any, event: str, arg: Any) -> Any:
            if time.monotonic() > deadline:
                raise _Deadline()
            return local

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            # Only the compiled template's own frames (its loops) are traced line by line.
            if frame.f_globals.get("environment") is env:
                return local
            return None

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            out = template.render(dict(variables))
        except _Deadline:
            raise TemplateError(f"rendering took longer than {self.timeout:g}s and was stopped") from None
        except jinja2.UndefinedError as e:
            raise TemplateError(f"missing variable: {e.message}") from None
        except jinja2.sandbox.SecurityError as e:
            raise TemplateError(f"the template did something not allowed: {e}") from None
        except jinja2.TemplateNotFound as e:
            # The message would name the server's folders: say only what is missing.
            raise TemplateError(f"the template extends or includes {e.name!r}, which does not exist") from None
        except jinja2.TemplateError as e:
            raise TemplateError(f"cannot render the template: {e}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as e:
            raise TemplateError(f"cannot render the template: {type(e).__name__}: {e}") from None
        finally:
            sys.settrace(previous)
        if len(out) > MAX_OUTPUT:
            raise TemplateError("the rendered template is larger than 2MB")
        return out

    def mjml_to_html(self, mjml: str) -> tuple[str, str]:
        """(html, text) for an MJML document, cached by its text."""
        key = hashlib.sha256(mjml.encode()).hexdigest()
        hit = self._html.get(key)
        if hit is not None:
            self._html.move_to_end(key)
            return hit
        from mjml import mjml2html

        try:
            html = mjml2html(mjml)
        except ValueError as e:
            raise TemplateError(f"not valid MJML: {e}") from None
        result = (html, html_to_text(html))
        self._html[key] = result
        if len(self._html) > self.cache_size:
            self._html.popitem(last=False)
        return result


# -- HTML to text ---------------------------------------------------------------------

_BLOCK = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "table", "section", "hr"}
_SKIP = {"style", "script", "head", "title"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.href: list[str | None] = []
        self.hidden: list[str] = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        style = (dict(attrs_).get("style") or "").replace(" ", "").lower()
        if tag in _SKIP or (tag == "div" and "display:none" in style):
            # The MJML preview (preheader) is a hidden div: not part of the text.
            self.skip += 1
            self.hidden.append(tag)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self.href.append(dict(attrs_).get("href"))
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self.hidden and tag == self.hidden[-1]:
            self.hidden.pop()
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag in ("td", "th"):
            self.parts.append("  ")
        if tag == "a" and self.href:
            href = self.href.pop()
            if href and not href.startswith("#"):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))

    def handle_comment(self, data: str) -> None:
        return None


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML email: blocks on their lines, links as ``text (url)``."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
