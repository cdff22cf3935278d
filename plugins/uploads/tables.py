"""The uploads plugin's table in the records store: one row per file."""

from __future__ import annotations

import sqlalchemy as sa

from plugboard.providers.records import UTCDateTime

TABLE = "uploads_files"


def define_tables(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("storage", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("mimetype", sa.String(255), nullable=False),
        sa.Column("encoding", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(255), nullable=True, index=True),
        sa.Column("visibility", sa.String(16), nullable=False),
        # ready: visible (written once its object is stored); uploading: a direct
        # upload prepared, not completed; pending: only in rows of the old
        # record-first write order, which the cleanup still removes.
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("variants", sa.JSON, nullable=False, default=list),
        sa.Column("processing", sa.Boolean, nullable=False, default=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
        # Direct uploads (status "uploading"): after this the prepared upload is void.
        sa.Column("expires_at", UTCDateTime(), nullable=True),
    )
