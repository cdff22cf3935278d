"""Verifying stand-ins for SendGrid and Mailgun (no local emulators exist for them).

Each checks what the provider's API reference requires (authentication,
content type, required and well-formed fields, reserved headers, limits) and
answers as the provider does: SendGrid ``202`` with an empty body and
``X-Message-Id`` (``200`` in sandbox mode), ``400 {"errors": [{message, field,
help}]}``, ``401``; Mailgun ``200 {"id", "message": "Queued. Thank you."}``,
``400 {"message"}``, ``401 Forbidden``, ``404`` for an unknown domain.
``fail_with`` makes the next answers a given status (429, 500 ...);
``delay`` makes them slow.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from aiohttp import web

SENDGRID_KEY = "SG.test-key"
MAILGUN_KEY = "key-test"
MAILGUN_DOMAIN = "mg.example.com"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
SENDGRID_RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}


class Fake:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.delay = 0.0

    async def _common(self) -> web.Response | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with == 429:
            return web.json_response({"errors": [{"message": "too many requests", "field": None, "help": None}]}, status=429)
        if self.fail_with:
            return web.json_response({"errors": [{"message": "internal error", "field": None, "help": None}]}, status=self.fail_with)
        return None


class SendgridFake(Fake):
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/mail/send", self.send)
        return app

    @staticmethod
    def _bad(message: str, field: str | None) -> web.Response:
        return web.json_response({"errors": [{"message": message, "field": field, "help": None}]}, status=400)

    def _email_object(self, value: Any, field: str) -> str | None:
        if not isinstance(value, dict) or set(value) - {"email", "name"}:
            return f"{field}: must be an object with email and optional name"
        if not isinstance(value.get("email"), str) or not _EMAIL.match(value["email"]):
            return f"{field}.email: does not contain a valid address"
        if "name" in value and (not isinstance(value["name"], str) or any(c in value["name"] for c in ";,\r\n")):
            return f"{field}.name: invalid"
        return None

    async def send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SENDGRID_KEY}":
            return web.json_response({"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": None, "help": None}]}, status=401)
        if request.content_type != "application/json":
            return self._bad("Content-Type should be application/json", None)
        failed = await self._common()
        if failed is not None:
            return failed
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._bad("Bad Request", None)
        allowed = {"personalizations", "from", "reply_to", "reply_to_list", "subject", "content", "attachments", "template_id",
                   "headers", "categories", "custom_args", "send_at", "batch_id", "asm", "ip_pool_name", "mail_settings", "tracking_settings"}
        if not isinstance(body, dict) or set(body) - allowed:
            return self._bad(f"unknown fields: {sorted(set(body) - allowed)}", None)
        ps = body.get("personalizations")
        if not isinstance(ps, list) or not 1 <= len(ps) <= 1000:
            return self._bad("The personalizations field is required and must have at least one personalization.", "personalizations")
        for i, p in enumerate(ps):
            if not isinstance(p.get("to"), list) or not p["to"]:
                return self._bad("The to array is required for all personalization objects, and must have at least one email object with a valid email address.", f"personalizations.{i}.to")
            seen = set()
            for key in ("to", "cc", "bcc"):
                for j, item in enumerate(p.get(key, [])):
                    problem = self._email_object(item, f"personalizations.{i}.{key}.{j}")
                    if problem:
                        return self._bad(problem, f"personalizations.{i}.{key}.{j}.email")
                    if item["email"].lower() in seen:
                        return self._bad("Each email address in the personalization block should be unique between to, cc, and bcc.", f"personalizations.{i}")
                    seen.add(item["email"].lower())
        problem = self._email_object(body.get("from"), "from")
        if problem:
            return self._bad(problem, "from.email")
        if "reply_to" in body and "reply_to_list" in body:
            return self._bad("reply_to and reply_to_list cannot both be set", "reply_to")
        if "reply_to" in body and (problem := self._email_object(body["reply_to"], "reply_to")):
            return self._bad(problem, "reply_to")
        if not isinstance(body.get("subject"), str) or not body["subject"]:
            if not all(isinstance(p.get("subject"), str) for p in ps) and "template_id" not in body:
                return self._bad("The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.", "subject")
        content = body.get("content")
        if "template_id" not in body:
            if not isinstance(content, list) or not content:
                return self._bad("Unless a valid template_id is provided, the content parameter is required.", "content")
            types = [c.get("type") for c in content]
            for j, c in enumerate(content):
                if not isinstance(c.get("value"), str) or not c["value"]:
                    return self._bad("The content value must be a string at least one character in length.", f"content.{j}.value")
            if "text/plain" in types and types[0] != "text/plain":
                return self._bad("If present, text/plain content must be first, followed by text/html.", "content.0.type")
        headers = body.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return self._bad("Invalid type. Expected: object, given: string. Header values must be strings.", "headers")
        for name in headers:
            if name.lower() in SENDGRID_RESERVED:
                return self._bad(f"The header {name} is reserved", "headers")
        custom = body.get("custom_args", {})
        if not isinstance(custom, dict) or not all(isinstance(v, str) for v in custom.values()):
            return self._bad("custom_args values must be strings", "custom_args")
        if len(json.dumps(custom)) > 10000:
            return self._bad("custom_args exceed 10,000 bytes", "custom_args")
        self.requests.append(body)
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return web.Response(status=200)
        return web.Response(status=202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})


class MailgunFake(Fake):
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/{domain}/messages", self.send)
        return app

    async def send(self, request: web.Request) -> web.Response:
        import base64

        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"api:{MAILGUN_KEY}".encode()).decode()
        if auth != expected:
            return web.Response(status=401, text="Forbidden")
        if request.match_info["domain"] != MAILGUN_DOMAIN:
            return web.json_response({"message": f"Domain not found: {request.match_info['domain']}"}, status=404)
        if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return web.json_response({"message": "unsupported content type"}, status=400)
        failed = await self._common()
        if failed is not None:
            return web.json_response({"message": "busy"}, status=failed.status)
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for key, value in form.items():
            fields.setdefault(key, []).append(str(value))
        for required in ("from", "to", "subject"):
            if not fields.get(required) or not fields[required][0]:
                return web.json_response({"message": f"'{required}' parameter is missing"}, status=400)
        if not fields.get("text") and not fields.get("html") and not fields.get("template"):
            return web.json_response({"message": "Need at least one of 'text', 'html' or 'template' parameters specified"}, status=400)
        for key in fields:
            if not (key in {"from", "to", "cc", "bcc", "subject", "text", "html", "amp-html", "template", "recipient-variables"}
                    or key.startswith(("h:", "v:", "o:", "t:"))):
                return web.json_response({"message": f"unknown parameter {key!r}"}, status=400)
        for key in ("from", "to", "cc", "bcc"):
            for value in fields.get(key, []):
                if not re.search(r"[^@\s<>]+@[^@\s<>]+", value) or "\n" in value:
                    return web.json_response({"message": f"'{key}' parameter is not a valid address. please check documentation"}, status=400)
        if len(fields.get("o:tag", [])) > 3:
            return web.json_response({"message": "too many tags"}, status=400)
        if fields.get("o:testmode", ["yes"])[0] not in ("yes", "no", "true", "false", "True", "False"):
            return web.json_response({"message": "o:testmode must be yes or no"}, status=400)
        self.requests.append(fields)
        return web.json_response({"id": f"<{uuid.uuid4().hex}@{MAILGUN_DOMAIN}>", "message": "Queued. Thank you."})
