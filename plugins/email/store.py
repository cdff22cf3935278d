"""The email plugin's tables in the records store (SQLAlchemy Core).

- ``email_templates``: templates created through the API (untrusted).
- ``email_messages``: one row per message, keyed by its idempotency key; the
  ledger that keeps a message from being sent twice, and the per-recipient cap.
- ``email_suppressions``: addresses that get no mail (``scope`` ``*``: hard bounce,
  complaint, admin) or no mail of one list (``scope`` = the list: unsubscribed).
- ``email_events``: provider and tracking events in one model.
- ``email_stats``: event counts per template and day (``features.analytics``).
- ``email_webhook_seen``: signatures already accepted (replay refusal).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from plugboard import keys
from plugboard.providers.records import UTCDateTime

MAX_ADDRESS = 320
MAX_NAME = 100


def define_tables(metadata: sa.MetaData) -> None:
    ts = UTCDateTime()
    sa.Table(
        "email_templates",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(MAX_NAME), nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    sa.Table(
        "email_messages",
        metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("address", sa.String(MAX_ADDRESS), nullable=False),
        sa.Column("template", sa.String(MAX_NAME), nullable=False),
        # queued -> sending -> sent | failed
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(400)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Index("ix_email_messages_address", "address", "created_at"),
        sa.Index("ix_email_messages_message_id", "message_id"),
    )
    sa.Table(
        "email_suppressions",
        metadata,
        sa.Column("address", sa.String(MAX_ADDRESS), primary_key=True),
        sa.Column("scope", sa.String(MAX_NAME), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", ts, nullable=False),
    )
    sa.Table(
        "email_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("address", sa.String(MAX_ADDRESS)),
        sa.Column("message_id", sa.String(400)),
        sa.Column("template", sa.String(MAX_NAME)),
        sa.Column("detail", sa.Text),
        sa.Column("at", ts, nullable=False),
    )
    sa.Table(
        "email_stats",
        metadata,
        sa.Column("template", sa.String(MAX_NAME), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("event", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    sa.Table(
        "email_webhook_seen",
        metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
    )


def table(app: Any, name: str) -> sa.Table:
    return app[keys.METADATA].tables[f"email_{name}"]
