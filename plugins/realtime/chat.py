"""Chat: chats with members, messages in the records store, live delivery over pubsub.

This module owns the ``realtime_chats``, ``realtime_chat_members`` and
``realtime_messages`` tables and the GraphQL surface: ``createChat``,
``sendMessage``, ``chats``, ``messages`` (newest first, opaque cursors) and
the ``messageReceived(chatId)`` subscription. Only members read, send and
subscribe; a message is stored first and then published on ``chat.<id>``,
so history never misses what a subscriber saw.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import sqlalchemy as sa

from plugboard.providers import pubsub
from plugboard import keys
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.identity import current_user
from plugboard.plugins.realtime.topics import topic_events
from plugboard.providers.records import UTCDateTime

logger = logging.getLogger("plugboard.realtime.chat")

MAX_BODY = 4000
MAX_NAME = 200
MAX_MEMBERS = 1000
MAX_USER_ID = 200
MAX_PAGE = 100
_CURSOR_PREFIX = "msg:"
# Ids are SQL INTEGER: a larger number would be a database error on PostgreSQL.
_MAX_ID = 2**31 - 1

#: This feature's SDL fragment; composition errors name this file and line.
SCHEMA = Path(__file__).with_name("chat.graphql")


def define_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """Add the chat tables to the records store's metadata."""
    chats = sa.Table(
        "realtime_chats",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(MAX_NAME), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    members = sa.Table(
        "realtime_chat_members",
        metadata,
        sa.Column("chat_id", sa.Integer, sa.ForeignKey("realtime_chats.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(MAX_USER_ID), primary_key=True),
        # "My chats" looks members up by user.
        sa.Index("ix_realtime_chat_members_user", "user_id"),
    )
    messages = sa.Table(
        "realtime_messages",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("chat_id", sa.Integer, sa.ForeignKey("realtime_chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sender_id", sa.String(MAX_USER_ID), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        # History pages walk one chat's messages by id, newest first.
        sa.Index("ix_realtime_messages_chat_id", "chat_id", "id"),
    )
    return chats, members, messages


def _tables(app: Any) -> tuple[sa.Table, sa.Table, sa.Table]:
    tables = app[keys.METADATA].tables
    return tables["realtime_chats"], tables["realtime_chat_members"], tables["realtime_messages"]


def _chat_id(value: Any) -> int:
    try:
        chat_id = int(value)
    except (TypeError, ValueError):
        raise GraphQLError(f"chatId {value!r} is not a chat id", "BAD_USER_INPUT") from None
    if not 0 < chat_id <= _MAX_ID:
        raise GraphQLError(f"chatId {value!r} is not a chat id", "BAD_USER_INPUT")
    return chat_id


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands timezone-aware columns back naive; they were stored as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _message(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "chatId": str(row.chat_id),
        "senderId": row.sender_id,
        "body": row.body,
        "createdAt": _utc(row.created_at),
    }


def _encode_cursor(message_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{message_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError(raw)
        message_id = int(raw[len(_CURSOR_PREFIX):])
        if not 0 < message_id <= _MAX_ID:
            raise ValueError(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise GraphQLError(f"invalid cursor {cursor!r}: use a cursor from a previous page", "BAD_USER_INPUT") from None
    return message_id


async def _check_member(conn: Any, app: Any, chat_id: int, user: str) -> None:
    """NOT_FOUND for an unknown chat, FORBIDDEN for a chat the user is not in."""
    chats, members, _ = _tables(app)
    found = (
        await conn.execute(
            sa.select(chats.c.id, members.c.user_id)
            .select_from(chats.outerjoin(members, sa.and_(members.c.chat_id == chats.c.id, members.c.user_id == user)))
            .where(chats.c.id == chat_id)
        )
    ).first()
    if found is None:
        raise GraphQLError(f"no chat with id {chat_id}", "NOT_FOUND")
    if found.user_id is None:
        raise GraphQLError("not a member of this chat", "FORBIDDEN")


def _member_ids(values: list[Any], creator: str) -> list[str]:
    out = {creator}
    for value in values:
        member = str(value).strip()
        if not member:
            raise GraphQLError("member ids must not be empty", "BAD_USER_INPUT")
        if len(member) > MAX_USER_ID:
            raise GraphQLError(f"member ids are at most {MAX_USER_ID} characters", "BAD_USER_INPUT")
        out.add(member)
    if len(out) > MAX_MEMBERS:
        raise GraphQLError(f"a chat has at most {MAX_MEMBERS} members", "BAD_USER_INPUT")
    return sorted(out)


async def resolve_create_chat(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    user = current_user(context)
    name = args["name"].strip()
    if not name:
        raise GraphQLError("name must not be empty", "BAD_USER_INPUT")
    if len(name) > MAX_NAME:
        raise GraphQLError(f"name is at most {MAX_NAME} characters", "BAD_USER_INPUT")
    member_ids = _member_ids(args["members"], user)
    chats, members, _ = _tables(context.app)
    now = dt.datetime.now(dt.timezone.utc)
    async with context.app[keys.RECORDS].begin() as conn:
        chat_id = (await conn.execute(sa.insert(chats).values(name=name, created_at=now))).inserted_primary_key[0]
        await conn.execute(sa.insert(members), [{"chat_id": chat_id, "user_id": m} for m in member_ids])
    return {"id": str(chat_id), "name": name, "members": member_ids, "createdAt": now}


async def resolve_chats(parent: Any, args: dict, context: Any, info: Any) -> list[dict[str, Any]]:
    user = current_user(context)
    chats, members, _ = _tables(context.app)
    mine = sa.select(members.c.chat_id).where(members.c.user_id == user)
    async with context.app[keys.RECORDS].connect() as conn:
        rows = (await conn.execute(sa.select(chats).where(chats.c.id.in_(mine)).order_by(chats.c.id.desc()))).all()
        everyone = (
            await conn.execute(
                sa.select(members.c.chat_id, members.c.user_id)
                .where(members.c.chat_id.in_(mine))
                .order_by(members.c.chat_id, members.c.user_id)
            )
        ).all()
    by_chat: dict[int, list[str]] = {}
    for chat_id, member in everyone:
        by_chat.setdefault(chat_id, []).append(member)
    return [
        {"id": str(r.id), "name": r.name, "members": by_chat.get(r.id, []), "createdAt": _utc(r.created_at)}
        for r in rows
    ]


async def resolve_send_message(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    user = current_user(context)
    chat_id = _chat_id(args["chatId"])
    body = args["body"]
    if not body.strip():
        raise GraphQLError("body must not be empty", "BAD_USER_INPUT")
    if len(body) > MAX_BODY:
        raise GraphQLError(f"body is at most {MAX_BODY} characters (got {len(body)})", "BAD_USER_INPUT")
    _, _, messages = _tables(context.app)
    now = dt.datetime.now(dt.timezone.utc)
    async with context.app[keys.RECORDS].begin() as conn:
        await _check_member(conn, context.app, chat_id, user)
        result = await conn.execute(
            sa.insert(messages).values(chat_id=chat_id, sender_id=user, body=body, created_at=now)
        )
        message_id = result.inserted_primary_key[0]
    message = {"id": str(message_id), "chatId": str(chat_id), "senderId": user, "body": body, "createdAt": now}
    # Stored first (committed above), then published: a subscriber that
    # reads history after an event always finds the message there.
    # The message is stored: failing the mutation would make the client send
    # it again. Only live delivery can be lost; history has it.
    await pubsub.publish(context.app, f"chat.{chat_id}", {**message, "createdAt": now.isoformat()}, what=f"chat message {message_id}")
    return message


async def resolve_messages(parent: Any, args: dict, context: Any, info: Any) -> dict[str, Any]:
    user = current_user(context)
    chat_id = _chat_id(args["chatId"])
    first = args.get("first")
    first = 50 if first is None else first
    if not 0 <= first <= MAX_PAGE:
        raise GraphQLError(f"first must be between 0 and {MAX_PAGE}", "BAD_USER_INPUT")
    before = _decode_cursor(args["before"]) if args.get("before") is not None else None
    _, _, messages = _tables(context.app)
    query = sa.select(messages).where(messages.c.chat_id == chat_id)
    if before is not None:
        query = query.where(messages.c.id < before)
    # One extra row tells whether another page follows.
    query = query.order_by(messages.c.id.desc()).limit(first + 1)
    async with context.app[keys.RECORDS].connect() as conn:
        await _check_member(conn, context.app, chat_id, user)
        rows = (await conn.execute(query)).all()
    page = rows[:first]
    edges = [{"cursor": _encode_cursor(r.id), "node": _message(r)} for r in page]
    return {
        "edges": edges,
        "pageInfo": {"hasNextPage": len(rows) > first, "endCursor": edges[-1]["cursor"] if edges else None},
    }


def _event_message(payload: Any, chat_id: int) -> dict[str, Any] | None:
    # Payloads cross instances as JSON: check the shape rather than trust it.
    if not isinstance(payload, dict) or payload.get("chatId") != str(chat_id):
        return None
    try:
        created = dt.datetime.fromisoformat(payload["createdAt"])
        return {
            "id": str(payload["id"]),
            "chatId": payload["chatId"],
            "senderId": str(payload["senderId"]),
            "body": str(payload["body"]),
            "createdAt": _utc(created),
        }
    except (KeyError, TypeError, ValueError):
        return None


async def subscribe_message_received(parent: Any, args: dict, context: Any, info: Any) -> AsyncIterator[dict[str, Any]]:
    user = current_user(context)
    chat_id = _chat_id(args["chatId"])
    async with context.app[keys.RECORDS].connect() as conn:
        await _check_member(conn, context.app, chat_id, user)
    events = topic_events(context.app, f"chat.{chat_id}", lambda payload: _event_message(payload, chat_id))
    try:
        async for message in events:
            yield {"messageReceived": message}
    finally:
        await events.aclose()

RESOLVERS = {
    "Query.chats": resolve_chats,
    "Query.messages": resolve_messages,
    "Mutation.createChat": resolve_create_chat,
    "Mutation.sendMessage": resolve_send_message,
}
SUBSCRIPTIONS = {
    "Subscription.messageReceived": subscribe_message_received,
}
