"""Notifications: a Python API other plugins call, stored per user and pushed live.

This module owns the ``realtime_notifications`` table, :func:`notify` (store,
then publish on ``notifications.<user>``) and the GraphQL surface: the
``notifications`` query, ``markNotificationRead``,
``markAllNotificationsRead`` and the ``notificationReceived(userId)``
subscription, which only that user may open. Another user's notification
is answered as NOT_FOUND, so ids reveal nothing about other users.

From another plugin::

    from plugboard.plugins.realtime.notifications import notify

    await notify(app, "alice", kind="order.shipped", title="Your order shipped", data={"order": 42})
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import sqlalchemy as sa
from aiohttp import web

from plugboard.providers import pubsub
from plugboard import keys
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.identity import current_user
from plugboard.plugins.realtime.topics import topic_events
from plugboard.providers.records import UTCDateTime

logger = logging.getLogger("plugboard.realtime.notifications")

MAX_USER_ID = 200
MAX_KIND = 100
MAX_TITLE = 500
MAX_PAGE = 100
# Ids are SQL INTEGER: a larger number would be a database error on PostgreSQL.
_MAX_ID = 2**31 - 1

#: This feature's SDL fragment; composition errors name this file and line.
SCHEMA = Path(__file__).with_name("notifications.graphql")


def define_tables(metadata: sa.MetaData) -> sa.Table:
    """Add the notifications table to the records store's metadata."""
    return sa.Table(
        "realtime_notifications",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(MAX_USER_ID), nullable=False),
        sa.Column("kind", sa.String(MAX_KIND), nullable=False),
        sa.Column("title", sa.String(MAX_TITLE), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        # A user's list, newest first.
        sa.Index("ix_realtime_notifications_user", "user_id", "id"),
    )


def _table(app: web.Application) -> sa.Table:
    return app[keys.METADATA].tables["realtime_notifications"]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands timezone-aware columns back naive; they were stored as UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


def _notification(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "userId": row.user_id,
        "kind": row.kind,
        "title": row.title,
        "body": row.body,
        "data": row.data,
        "createdAt": _utc(row.created_at),
        "readAt": _utc(row.read_at),
        "read": row.read_at is not None,
    }


def _text(name: str, value: Any, limit: int, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"notify: {name} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"notify: {name} must not be empty")
    if limit and len(value) > limit:
        raise ValueError(f"notify: {name} is at most {limit} characters")
    return value


async def notify(
    app: web.Application,
    user_id: str,
    *,
    kind: str,
    title: str,
    body: str = "",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a notification for ``user_id``, then push it to the user's live subscriptions.

    :param app: the running application (the realtime plugin with
        ``features.notifications`` on).
    :param user_id: the recipient, as the context hook identifies users.
    :param kind: what happened, e.g. ``"order.shipped"``.
    :param title: one line for the user.
    :param body: more text (may be empty).
    :param data: JSON-serializable extras for the client.
    :returns: the notification as the GraphQL ``Notification`` fields.
    :raises ValueError: an argument is empty, too long or not JSON-serializable.
    """
    _text("user_id", user_id, MAX_USER_ID)
    _text("kind", kind, MAX_KIND)
    _text("title", title, MAX_TITLE)
    _text("body", body, 0, required=False)
    if data is not None:
        if not isinstance(data, dict):
            raise ValueError(f"notify: data must be a dict, not {type(data).__name__}")
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"notify: data must be JSON-serializable: {e}") from None
    table = _table(app)
    now = dt.datetime.now(dt.timezone.utc)
    async with app[keys.RECORDS].begin() as conn:
        result = await conn.execute(
            sa.insert(table).values(user_id=user_id, kind=kind, title=title, body=body, data=data, created_at=now)
        )
        notification_id = result.inserted_primary_key[0]
    notification = {
        "id": str(notification_id),
        "userId": user_id,
        "kind": kind,
        "title": title,
        "body": body,
        "data": data,
        "createdAt": now,
        "readAt": None,
        "read": False,
    }
    # Stored: the user still finds it in `notifications`; only the push can be lost.
    await pubsub.publish(app, f"notifications.{user_id}", {**notification, "createdAt": now.isoformat()}, what=f"notification {notification_id}")
    return notification


def _notification_id(value: Any) -> int:
    try:
        notification_id = int(value)
    except (TypeError, ValueError):
        raise GraphQLError(f"id {value!r} is not a notification id", "BAD_USER_INPUT") from None
    if not 0 < notification_id <= _MAX_ID:
        raise GraphQLError(f"id {value!r} is not a notification id", "BAD_USER_INPUT")
    return notification_id


async def resolve_notifications(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    user = current_user(context)
    first = args.get("first")
    first = 50 if first is None else first
    if not 0 <= first <= MAX_PAGE:
        raise GraphQLError(f"first must be between 0 and {MAX_PAGE}", "BAD_USER_INPUT")
    table = _table(context.app)
    query = sa.select(table).where(table.c.user_id == user)
    if args.get("unreadOnly"):
        query = query.where(table.c.read_at.is_(None))
    query = query.order_by(table.c.id.desc()).limit(first)
    async with context.app[keys.RECORDS].connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_notification(r) for r in rows]


async def resolve_mark_read(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    user = current_user(context)
    notification_id = _notification_id(args["id"])
    table = _table(context.app)
    mine = sa.and_(table.c.id == notification_id, table.c.user_id == user)
    async with context.app[keys.RECORDS].begin() as conn:
        # Only an unread one changes: marking twice keeps the first read time.
        await conn.execute(
            sa.update(table).where(mine, table.c.read_at.is_(None)).values(read_at=dt.datetime.now(dt.timezone.utc))
        )
        row = (await conn.execute(sa.select(table).where(mine))).first()
    if row is None:
        raise GraphQLError(f"no notification with id {notification_id}", "NOT_FOUND")
    return _notification(row)


async def resolve_mark_all_read(parent: Any, args: dict, context: Any, info: Any) -> int:
    user = current_user(context)
    table = _table(context.app)
    async with context.app[keys.RECORDS].begin() as conn:
        result = await conn.execute(
            sa.update(table)
            .where(table.c.user_id == user, table.c.read_at.is_(None))
            .values(read_at=dt.datetime.now(dt.timezone.utc))
        )
    return result.rowcount


def _event_notification(payload: Any, user: str) -> dict[str, Any] | None:
    # Payloads cross instances as JSON: check the shape rather than trust it.
    if not isinstance(payload, dict) or payload.get("userId") != user:
        return None
    try:
        return {
            "id": str(payload["id"]),
            "userId": user,
            "kind": str(payload["kind"]),
            "title": str(payload["title"]),
            "body": str(payload.get("body") or ""),
            "data": payload.get("data"),
            "createdAt": _utc(dt.datetime.fromisoformat(payload["createdAt"])),
            "readAt": None,
            "read": False,
        }
    except (KeyError, TypeError, ValueError):
        return None


async def subscribe_notification_received(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    user = current_user(context)
    if args["userId"] != user:
        raise GraphQLError("you may only subscribe to your own notifications", "FORBIDDEN")
    events = topic_events(context.app, f"notifications.{user}", lambda payload: _event_notification(payload, user))
    try:
        async for notification in events:
            yield {"notificationReceived": notification}
    finally:
        await events.aclose()

RESOLVERS = {
    "Query.notifications": resolve_notifications,
    "Mutation.markNotificationRead": resolve_mark_read,
    "Mutation.markAllNotificationsRead": resolve_mark_all_read,
}
SUBSCRIPTIONS = {
    "Subscription.notificationReceived": subscribe_notification_received,
}
