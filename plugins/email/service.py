"""The email service, ``app[plugboard.plugins.email.keys.EMAIL]``: the seed's ``emailService``.

::

    await app[EMAIL].send("user@example.com", "welcome", {"username": "John Doe"})

A send checks the address (email-validator), the variables, the suppression
list and the per-recipient cap, renders the template, records the message
under its idempotency key and enqueues a ``send-email`` job carrying that key
(with the jobs plugin), or sends within ``send_timeout`` in the request
(without it). The service is also the jobs plugin's ``SendGuard``: it claims
the key before the provider is called and records the outcome, so a message
is sent at most once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import json
import logging
import time
import uuid
from email.message import EmailMessage
from typing import Any, Mapping

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from plugboard import keys
from plugboard.providers import pubsub
from plugboard.providers.mailer import MailerError, build_message, parse_addresses
from plugboard.plugins.email import store
from plugboard.plugins.email.config import EmailConfig
from plugboard.plugins.email.templates import BUILTINS, TRANSACTIONAL, Renderer, Rendered, TemplateError
from plugboard.plugins.email.tokens import Signer

logger = logging.getLogger("plugboard.email")

#: Pub/sub topic of ``emailEvents``.
TOPIC = "email.events"
#: The normalised event model.
EVENTS = ("sent", "delivered", "deferred", "bounced", "complained", "unsubscribed", "opened", "clicked", "failed")
MAX_NAME = 100


class EmailError(Exception):
    """A send or template operation refused; ``code`` is the GraphQL ``extensions.code``."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message)
        self.code = code


@attrs.define(frozen=True, kw_only=True)
class Template:
    id: str
    name: str
    subject: str
    content: str
    builtin: bool
    #: The mailing list its messages belong to (List-Unsubscribe), or None: transactional.
    list: str | None = None


@attrs.define(frozen=True, kw_only=True)
class Outcome:
    key: str
    #: ``queued`` (a job will send it) or ``sent``.
    status: str
    job_id: str | None = None
    message_id: str | None = None


def check_address(value: Any) -> str:
    """One deliverable-looking address (normalised), or EmailError."""
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(value, str) or not value.strip():
        raise EmailError("to: expected one email address")
    if "\r" in value or "\n" in value:
        raise EmailError("to: line breaks are not allowed")
    if "," in value or ";" in value:
        raise EmailError("to: expected one address, not several")
    name, addr = email.utils.parseaddr(value)
    if not addr or (addr != value.strip() and not value.strip().endswith(">")):
        raise EmailError(f"to: {value!r} is not an email address")
    try:
        return validate_email(addr, check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise EmailError(f"to: {value!r} is not an email address: {e}") from None


class EmailService:
    """Templates, sending, suppression, events and statistics of one app."""

    def __init__(self, app: Any, config: EmailConfig) -> None:
        self.app = app
        self.config = config
        root = app[keys.SETTINGS].root
        tdir = (root / config.templates_dir) if config.templates_dir else None
        self.renderer = Renderer(templates_dir=tdir, timeout=config.render_timeout, cache_size=config.cache_size)
        secret = config.secret.encode() if config.secret else None
        self._signer: Signer | None = Signer(secret) if secret else None
        self._file_templates: dict[str, tuple[str, str]] = {}
        self._from_domain: str | None = None
        self.dkim = None
        #: Set at start-up (the Redis client exists only then); see :meth:`start`.
        self.ledger: Any = None
        from plugboard.plugins.email.webhooks import SnsVerifier

        hooks = config.webhooks
        self.sns = SnsVerifier(hooks.ses_cert_host, hooks.ses_topic_arns, str(root / hooks.ses_ca_file) if hooks.ses_ca_file else None, hooks.max_age)

    # -- set-up ----------------------------------------------------------------------

    def start(self) -> None:
        """Choose the ledger: Redis with ``ledger: redis`` (or ``auto`` and a Redis client), else SQL."""
        from plugboard.plugins.email.ledger import RedisLedger, SqlLedger

        client = self.app.get(keys.REDIS)
        if self.config.ledger == "redis" or (self.config.ledger == "auto" and client is not None):
            self.ledger = RedisLedger(client, retention=self.config.ledger_retention, window=self.config.rate_window)
        else:
            self.ledger = SqlLedger(self.app)

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self.app[keys.FILE_SIGNER].secret)
        return self._signer

    def builtin_names(self) -> list[str]:
        """Enabled built-in templates, plus every extra ``<name>.mjml`` of ``templates_dir``."""
        names = [n for n, switch in BUILTINS.items() if getattr(self.config.templates, switch)]
        tdir = self.renderer.templates_dir
        if tdir is not None and tdir.is_dir():
            names += sorted(p.stem for p in tdir.glob("*.mjml") if p.stem != "base" and p.stem not in BUILTINS)
        return names

    def load_file_templates(self) -> None:
        """Compile and check every file template at start-up (a broken override fails start-up)."""
        for name in self.builtin_names():
            subject, source = self.renderer.file_source(name)
            try:
                self.renderer.check(subject, source)
            except TemplateError as e:
                raise EmailError(f"template {name!r}: {e}") from None
            self._file_templates[name] = (subject, source)

    def list_of(self, name: str) -> str | None:
        if not self.config.features.unsubscribe or name in TRANSACTIONAL:
            return None
        return name if name in self.config.unsubscribe.templates else None

    def _engine(self) -> Any:
        return self.app[keys.RECORDS]

    # -- templates ---------------------------------------------------------------------

    async def template(self, template_id: Any) -> Template:
        """A template by id: a built-in's name, or a created template's id or name."""
        if not isinstance(template_id, str) or not template_id or len(template_id) > MAX_NAME:
            raise EmailError(f"no email template {template_id!r}", "NOT_FOUND")
        if template_id in self._file_templates:
            subject, source = self._file_templates[template_id]
            return Template(id=template_id, name=template_id, subject=subject, content=source, builtin=True, list=self.list_of(template_id))
        table = store.table(self.app, "templates")
        where = table.c.name == template_id
        if template_id.isdigit() and int(template_id) < 2**31:
            where = sa.or_(where, table.c.id == int(template_id))
        async with self._engine().connect() as conn:
            row = (await conn.execute(sa.select(table).where(where))).first()
        if row is None:
            raise EmailError(f"no email template {template_id!r}", "NOT_FOUND")
        return self._from_row(row)

    def _from_row(self, row: Any) -> Template:
        return Template(id=str(row.id), name=row.name, subject=row.subject, content=row.content, builtin=False, list=self.list_of(row.name))

    async def templates(self) -> list[Template]:
        out = [await self.template(name) for name in self._file_templates]
        table = store.table(self.app, "templates")
        async with self._engine().connect() as conn:
            rows = (await conn.execute(sa.select(table).order_by(table.c.id))).all()
        return out + [self._from_row(r) for r in rows]

    def _check_source(self, name: Any, subject: Any, content: Any) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or any(c.isspace() for c in name):
            raise EmailError(f"name: 1 to {MAX_NAME} characters without spaces")
        if name in BUILTINS or name in self._file_templates or name == "base":
            raise EmailError(f"name: {name!r} is a built-in template; override it with a file in email.templates_dir")
        if name.isdigit():
            raise EmailError("name: must not be a number (numbers are template ids)")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 998:
            raise EmailError("subject: 1 to 998 characters")
        if not isinstance(content, str) or not content.strip():
            raise EmailError("content: an MJML document is required")
        if len(content.encode()) > self.config.max_template_size:
            raise EmailError(f"content: larger than {self.config.max_template_size} bytes")
        try:
            self.renderer.check(subject, content)
        except TemplateError as e:
            raise EmailError(str(e)) from None

    async def create_template(self, name: str, subject: str, content: str) -> Template:
        self._check_source(name, subject, content)
        table = store.table(self.app, "templates")
        now = dt.datetime.now(dt.timezone.utc)
        try:
            async with self._engine().begin() as conn:
                result = await conn.execute(sa.insert(table).values(name=name, subject=subject, content=content, created_at=now, updated_at=now))
                new_id = result.inserted_primary_key[0]
        except IntegrityError:
            raise EmailError(f"name: a template named {name!r} exists") from None
        return await self.template(str(new_id))

    async def update_template(self, template_id: Any, *, name: Any = None, subject: Any = None, content: Any = None) -> Template:
        current = await self.template(template_id)
        if current.builtin:
            raise EmailError(f"{current.name!r} is a built-in template; override it with a file in email.templates_dir")
        name = current.name if name is None else name
        subject = current.subject if subject is None else subject
        content = current.content if content is None else content
        if name != current.name:
            self._check_source(name, subject, content)
        else:
            self._check_source("x" if name in BUILTINS else name, subject, content)
        table = store.table(self.app, "templates")
        try:
            async with self._engine().begin() as conn:
                await conn.execute(
                    sa.update(table).where(table.c.id == int(current.id)).values(
                        name=name, subject=subject, content=content, updated_at=dt.datetime.now(dt.timezone.utc)
                    )
                )
        except IntegrityError:
            raise EmailError(f"name: a template named {name!r} exists") from None
        return await self.template(current.id)

    def _variables(self, variables: Any) -> dict[str, Any]:
        if variables is None:
            return {}
        if not isinstance(variables, Mapping):
            raise EmailError("variables: expected a JSON object")
        try:
            size = len(json.dumps(variables, allow_nan=False).encode())
        except (TypeError, ValueError) as e:
            raise EmailError(f"variables: not JSON values: {e}") from None
        if size > self.config.max_variables_size:
            raise EmailError(f"variables: {size} bytes of JSON, more than {self.config.max_variables_size}", "PAYLOAD_TOO_LARGE")
        return dict(variables)

    async def preview(self, template_id: Any, variables: Any = None, *, to: str = "preview@example.com") -> Rendered:
        template = await self.template(template_id)
        return self._render(template, self._variables(variables), to)

    def _render(self, template: Template, variables: dict[str, Any], to: str) -> Rendered:
        extra: dict[str, Any] = {}
        if template.list is not None:
            extra["unsubscribe_url"] = self.unsubscribe_url(to, template.list)
        try:
            return self.renderer.render(template.subject, template.content, {**variables, **extra})
        except TemplateError as e:
            raise EmailError(f"template {template.name!r}: {e}") from None

    # -- unsubscribe and tracking URLs -------------------------------------------------

    def _url(self, suffix: str) -> str:
        return f"{self.config.public_url.rstrip('/')}{self.config.path}{suffix}"

    def unsubscribe_url(self, address: str, list_name: str) -> str:
        return self._url(f"/unsubscribe/{self.signer.sign('unsubscribe', {'a': address, 'l': list_name})}")

    def list_headers(self, address: str, list_name: str) -> dict[str, str]:
        """RFC 2369 / RFC 8058 headers for one recipient of one list."""
        value = f"<{self.unsubscribe_url(address, list_name)}>"
        if self.config.unsubscribe.mailto:
            value += f", <mailto:{self.config.unsubscribe.mailto}?subject=unsubscribe%20{list_name}>"
        return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "List-Id": f"<{list_name}.{self._domain()}>"}

    def _domain(self) -> str:
        if self._from_domain is None:
            self._from_domain = email.utils.parseaddr(self.config.from_address)[1].rpartition("@")[2] or "localhost"
        return self._from_domain

    # -- sending -------------------------------------------------------------------------

    async def send(self, to: Any, template_id: Any, variables: Any = None, *, key: str | None = None, owner: str | None = None) -> Outcome:
        """Validate, render and queue (or send) one message; EmailError says why not.

        :param key: the idempotency key; the same key never sends a second message.
        """
        address = check_address(to)
        variables = self._variables(variables)
        template = await self.template(template_id)
        rendered = self._render(template, variables, address)
        headers = {"X-Plugboard-Template": template.name}
        if template.list is not None:
            headers.update(self.list_headers(address, template.list))
        if self.config.features.analytics and (self.config.tracking.opens or self.config.tracking.clicks):
            from plugboard.plugins.email.analytics import track

            rendered = track(self, rendered, address, template.name)
        key = key or uuid.uuid4().hex
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise EmailError("idempotency key: 1 to 200 characters")
        existing = await self._record(key, address, template.name, template.list)
        if existing is not None:
            return existing
        args = {
            "to": address,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "headers": headers,
            "from": self.config.from_address,
            "idempotency_key": key,
        }
        jobs = self._jobs()
        if jobs is not None:
            job = await jobs.enqueue("send-email", args, owner=owner)
            return Outcome(key=key, status="queued", job_id=job.id)
        return await self._send_now(key, args)

    def _jobs(self) -> Any:
        try:
            from plugboard.plugins.jobs.keys import JOBS
        except ImportError:  # pragma: no cover - the jobs plugin ships with the core
            return None
        jobs = self.app.get(JOBS)
        if jobs is None or "send-email" not in jobs.types():
            return None
        return jobs

    async def _send_now(self, key: str, args: dict[str, Any]) -> Outcome:
        message = build_message(
            sender=args["from"], to=parse_addresses(args["to"], "to"), subject=args["subject"],
            text=args["text"], html=args["html"], headers=args["headers"],
        )
        try:
            claimed = await self.claim(key)
        except MailerError as e:
            raise EmailError(str(e), "EMAIL_NOT_SENT") from None
        if claimed is not None:
            return Outcome(key=key, status="sent", message_id=claimed.get("message_id"))
        message = self.prepare(key, message)
        mailer = self.app[keys.SERVICES].get("mailer", self.config.mailer)
        # Within the claim's lease too, or a concurrent duplicate could take the message over.
        limit = min(self.config.send_timeout, self.config.send_lease or self.config.send_timeout)
        try:
            sent = await asyncio.wait_for(mailer.send(message), limit)
        except asyncio.TimeoutError:
            error = MailerError(f"the mailer did not answer within {limit:g}s", permanent=False)
            await self.finish(key, None, error)
            raise EmailError(str(error), "EMAIL_NOT_SENT") from None
        except MailerError as e:
            await self.finish(key, None, e)
            raise EmailError(f"the mailer refused the message: {e}", "EMAIL_NOT_SENT") from None
        result = {"message_id": sent.message_id, "accepted": sent.accepted, "refused": sent.refused}
        await self.finish(key, result, None)
        return Outcome(key=key, status="sent", message_id=sent.message_id)

    async def _record(self, key: str, address: str, template: str, list_name: str | None) -> Outcome | None:
        """Check the recipient and reserve the key in the ledger; an existing key returns its outcome."""

        async def check(conn: Any) -> None:
            await self._check_recipient(conn, address, list_name)

        entry = await self.ledger.reserve(key, address, template, check)
        if entry is None:
            return None
        return Outcome(key=key, status="sent" if entry.status == "sent" else "queued", message_id=entry.message_id)

    async def _check_recipient(self, conn: Any, address: str, list_name: str | None) -> None:
        """Refuse a suppressed (or unsubscribed) address, and one over the per-recipient cap."""
        suppressions = store.table(self.app, "suppressions")
        scopes = ["*"] + ([list_name] if list_name else [])
        query = sa.select(suppressions).where(suppressions.c.address == address, suppressions.c.scope.in_(scopes))
        if conn is None:
            async with self._engine().connect() as own:
                row = (await own.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        if row is not None:
            what = "unsubscribed from " + row.scope if row.scope != "*" else f"suppressed ({row.reason})"
            raise EmailError(f"{address} is {what}; nothing was sent", "EMAIL_SUPPRESSED")
        limit = self.config.per_recipient_limit
        if limit:
            count = await self.ledger.recent(conn, address, time.time() - self.config.rate_window)
            if count >= limit:
                raise EmailError(f"{address} has been sent {count} messages in the last {self.config.rate_window:g}s (the cap); try later", "TOO_MANY_REQUESTS")

    # -- SendGuard (the jobs plugin's send-email calls these) ---------------------------

    @property
    def lease(self) -> float:
        """Seconds one attempt may hold a message (``email.send_lease``; 0: no limit)."""
        return self.config.send_lease

    async def claim(self, key: str) -> dict[str, Any] | None:
        entry = await self.ledger.claim(key, self.config.send_lease)
        if entry is None:
            return None
        if entry.status == "sent":
            return {"message_id": entry.message_id, "accepted": [entry.address], "refused": {}, "already_sent": True}
        if entry.status == "sending":
            if self.config.send_lease > 0:
                # Another attempt holds the lease: a duplicate delivery of a job in flight.
                # Not sent now; the retry finds it sent, or the lease expired (that attempt died).
                raise MailerError(
                    f"another attempt is sending this message (its lease runs up to {self.config.send_lease:g}s); not sent twice, tried again later",
                    permanent=False,
                )
            raise MailerError(
                "an earlier attempt stopped while handing this message to the provider; it may have been delivered, "
                "so it is not sent again (email.send_lease is 0)",
                permanent=True,
            )
        raise MailerError(f"this message failed for good earlier: {entry.error}", permanent=True)

    def message_id(self, key: str) -> str:
        return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{self._domain()}>"

    def prepare(self, key: str, message: EmailMessage) -> EmailMessage:
        del message["Message-ID"]
        message["Message-ID"] = self.message_id(key)
        if self.dkim is not None:
            message = self.dkim.sign(message)
        return message

    async def finish(self, key: str, result: dict[str, Any] | None, error: MailerError | None) -> None:
        """Record the outcome in the ledger; with analytics also the event and its count."""
        if result is not None:
            status, event, detail, message_id = "sent", "sent", None, result["message_id"]
        elif error is not None:
            status, event, detail, message_id = ("failed" if error.permanent else "retry"), ("failed" if error.permanent else None), str(error), None
        else:
            return
        entry = await self._finish_ledger(key, status, message_id=message_id, error=detail)
        if event is None or entry is None or not entry.address:
            return
        at = dt.datetime.now(dt.timezone.utc)
        if self.config.features.analytics:
            async with self._engine().begin() as conn:
                await conn.execute(sa.insert(store.table(self.app, "events")).values(
                    provider="plugboard", event=event, address=entry.address, message_id=message_id, template=entry.template, detail=detail, at=at
                ))
                await self._count(conn, entry.template, at.date(), event)
        await pubsub.publish(self.app, TOPIC, {
            "provider": "plugboard", "event": event, "address": entry.address, "messageId": message_id,
            "template": entry.template, "detail": detail, "at": at.isoformat(),
        }, what="email event")

    async def _finish_ledger(self, key: str, status: str, *, message_id: str | None, error: str | None) -> Any:
        """Record the outcome, trying again while the store is busy (SQLite locked, Redis reconnecting).

        After the provider accepted the message, failing here must not fail the
        job (a retry would find the key ``sending`` and refuse): the outcome is
        logged instead.
        """
        delay = 0.05
        for attempt in range(6):
            try:
                return await self.ledger.finish(key, status, message_id=message_id, error=error)
            except Exception as e:  # the store's own errors: sqlalchemy's, redis's
                if attempt == 5:
                    if status == "sent":
                        logger.exception("email: message %s was sent but its ledger entry %r could not be updated", message_id, key)
                        return None
                    raise
                logger.warning("email: ledger busy recording %r (%s: %s); trying again", key, type(e).__name__, e)
                await asyncio.sleep(delay)
                delay *= 2
        return None

    # -- suppression ---------------------------------------------------------------------

    async def suppress(self, address: str, scope: str, reason: str, detail: str | None = None) -> bool:
        """Add to the list; False when it was there already (unsubscribing twice is fine)."""
        table = store.table(self.app, "suppressions")
        try:
            async with self._engine().begin() as conn:
                await conn.execute(sa.insert(table).values(address=address.lower(), scope=scope, reason=reason, detail=detail, created_at=dt.datetime.now(dt.timezone.utc)))
        except IntegrityError:
            return False
        return True

    async def suppressions(self, *, first: int = 100, address: str | None = None) -> list[Any]:
        table = store.table(self.app, "suppressions")
        query = sa.select(table).order_by(table.c.created_at.desc()).limit(first)
        if address:
            query = query.where(table.c.address == address.lower())
        async with self._engine().connect() as conn:
            return list((await conn.execute(query)).all())

    async def unsuppress(self, address: str, scope: str | None = None) -> bool:
        table = store.table(self.app, "suppressions")
        query = sa.delete(table).where(table.c.address == address.lower())
        if scope is not None:
            query = query.where(table.c.scope == scope)
        async with self._engine().begin() as conn:
            return (await conn.execute(query)).rowcount > 0

    # -- events and statistics ---------------------------------------------------------

    async def template_of(self, message_id: str | None) -> str | None:
        return await self.ledger.template_of(message_id) if message_id else None

    async def record_event(
        self, provider: str, event: str, *, address: str | None = None, message_id: str | None = None,
        template: str | None = None, detail: str | None = None, at: dt.datetime | None = None,
    ) -> None:
        """Store one normalised event; suppress on hard bounces and complaints; count it; publish it."""
        at = at or dt.datetime.now(dt.timezone.utc)
        template = template or await self.template_of(message_id)
        async with self._engine().begin() as conn:
            await conn.execute(sa.insert(store.table(self.app, "events")).values(
                provider=provider, event=event, address=address, message_id=message_id, template=template, detail=detail, at=at
            ))
            if self.config.features.analytics and template:
                await self._count(conn, template, at.date(), event.split(":")[0])
        if address and (event == "bounced:hard" or event == "complained") and self.config.features.bounce:
            await self.suppress(address, "*", event.replace(":", "-"), detail)
        await pubsub.publish(self.app, TOPIC, {
            "provider": provider, "event": event, "address": address, "messageId": message_id,
            "template": template, "detail": detail, "at": at.isoformat(),
        }, what="email event")

    async def _count(self, conn: Any, template: str, day: dt.date, event: str) -> None:
        table = store.table(self.app, "stats")
        result = await conn.execute(
            sa.update(table).where(table.c.template == template, table.c.day == day, table.c.event == event).values(count=table.c.count + 1)
        )
        if result.rowcount == 0:
            try:
                async with conn.begin_nested():
                    await conn.execute(sa.insert(table).values(template=template, day=day, event=event, count=1))
            except IntegrityError:
                await conn.execute(
                    sa.update(table).where(table.c.template == template, table.c.day == day, table.c.event == event).values(count=table.c.count + 1)
                )

    async def stats(self, template: str | None, start: dt.date, end: dt.date) -> list[Any]:
        table = store.table(self.app, "stats")
        query = sa.select(table).where(table.c.day >= start, table.c.day <= end).order_by(table.c.day, table.c.template, table.c.event)
        if template:
            query = query.where(table.c.template == template)
        async with self._engine().connect() as conn:
            return list((await conn.execute(query)).all())

    async def seen(self, key: str) -> bool:
        """Remember a webhook signature; True when it was seen before (a replay)."""
        table = store.table(self.app, "webhook_seen")
        now = time.time()
        try:
            async with self._engine().begin() as conn:
                await conn.execute(sa.delete(table).where(table.c.at < now - 2 * self.config.webhooks.max_age - 60))
                await conn.execute(sa.insert(table).values(key=key[:200], at=now))
        except IntegrityError:
            return True
        return False
