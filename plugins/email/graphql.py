"""The email plugin's resolvers: templates, ``sendEmail``, suppression, statistics, ``emailEvents``.

Admins (the jobs plugin's rule: the ``admin`` role or ``server.admin_token``)
manage templates, read the suppression list, statistics and events.
``sendEmail`` is for admins too unless ``email.send_access: authenticated``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator

from plugboard.graphql.errors import GraphQLError
from plugboard.providers import pubsub
from plugboard.plugins.email.keys import EMAIL
from plugboard.plugins.email.service import TOPIC, EmailError, EmailService, Template
from plugboard.graphql.context import is_admin


def _service(context: Any) -> EmailService:
    return context.app[EMAIL]


def _require_admin(context: Any) -> None:
    if not is_admin(context):
        raise GraphQLError("only admins may do this", "FORBIDDEN")


def _identity(context: Any) -> str | None:
    identity = getattr(context, "identity", None)
    if isinstance(identity, dict):
        identity = identity.get("id")
    elif identity is not None and not isinstance(identity, (str, int)):
        identity = getattr(identity, "id", None)
    return None if identity is None or isinstance(identity, bool) else str(identity)


def _fields(t: Template) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "subject": t.subject, "content": t.content, "builtin": t.builtin, "list": t.list}


def _error(e: EmailError) -> GraphQLError:
    return GraphQLError(str(e), e.code)


async def resolve_templates(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    _require_admin(context)
    return [_fields(t) for t in await _service(context).templates()]


async def resolve_preview(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    try:
        rendered = await _service(context).preview(args["id"], args.get("variables"))
    except EmailError as e:
        raise _error(e) from None
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}


async def resolve_create(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    data = args["input"]
    try:
        return _fields(await _service(context).create_template(data["name"], data["subject"], data["content"]))
    except EmailError as e:
        raise _error(e) from None


async def resolve_update(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    _require_admin(context)
    data = args["input"]
    try:
        return _fields(await _service(context).update_template(args["id"], **{k: data.get(k) for k in ("name", "subject", "content")}))
    except EmailError as e:
        raise _error(e) from None


async def resolve_send(parent: Any, args: dict, context: Any, info: Any) -> bool:
    service = _service(context)
    if not is_admin(context):
        if service.config.send_access != "authenticated":
            raise GraphQLError("only admins may send email", "FORBIDDEN")
        if _identity(context) is None:
            raise GraphQLError("sign in to send email", "UNAUTHENTICATED")
    try:
        await service.send(args["to"], args["templateId"], args.get("variables"), key=args.get("idempotencyKey"), owner=_identity(context))
    except EmailError as e:
        raise _error(e) from None
    return True


async def resolve_suppressions(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    _require_admin(context)
    first = args.get("first", 100)
    if not isinstance(first, int) or not 0 <= first <= 1000:
        raise GraphQLError("first must be between 0 and 1000", "BAD_USER_INPUT")
    rows = await _service(context).suppressions(first=first, address=args.get("address"))
    return [{"address": r.address, "scope": r.scope, "reason": r.reason, "detail": r.detail, "createdAt": r.created_at} for r in rows]


async def resolve_remove_suppression(parent: Any, args: dict, context: Any, info: Any) -> bool:
    _require_admin(context)
    return await _service(context).unsuppress(args["address"], args.get("scope"))


def _day(value: Any, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise GraphQLError(f"{name}: expected a date such as 2026-01-31", "BAD_USER_INPUT") from None


async def resolve_stats(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    _require_admin(context)
    service = _service(context)
    if not service.config.features.analytics:
        raise GraphQLError("email analytics are off (email.features.analytics)", "FEATURE_DISABLED")
    start, end = _day(args["from"], "from"), _day(args["to"], "to")
    if end < start or (end - start).days > 366:
        raise GraphQLError("to must be on or after from, at most 366 days later", "BAD_USER_INPUT")
    rows = await service.stats(args.get("template"), start, end)
    return [{"template": r.template, "day": r.day.isoformat(), "event": r.event, "count": r.count} for r in rows]


def _decode_event(payload: Any) -> dict[str, Any]:
    return {**payload, "at": dt.datetime.fromisoformat(payload["at"])}


async def subscribe_events(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    _require_admin(context)
    try:
        async for event in pubsub.events(context.app, TOPIC, _decode_event):
            yield {"emailEvents": event}
    except LookupError:
        raise GraphQLError("no pubsub service runs", "SERVICE_UNAVAILABLE") from None


RESOLVERS = {
    "Query.emailTemplates": resolve_templates,
    "Query.previewEmailTemplate": resolve_preview,
    "Query.emailSuppressions": resolve_suppressions,
    "Query.emailStats": resolve_stats,
    "Mutation.sendEmail": resolve_send,
    "Mutation.createEmailTemplate": resolve_create,
    "Mutation.updateEmailTemplate": resolve_update,
    "Mutation.removeEmailSuppression": resolve_remove_suppression,
}
SUBSCRIPTIONS = {"Subscription.emailEvents": subscribe_events}
