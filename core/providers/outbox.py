"""The ``outbox`` mailer: each message becomes an RFC 5322 ``.eml`` file (the embedded default)."""

from __future__ import annotations

import asyncio
import email.policy
import os
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterable

import attrs

from plugboard.providers.mailer import MailerError, SendResult, recipients


@attrs.define(frozen=True, kw_only=True)
class OutboxConfig:
    """The ``outbox`` mailer: each message becomes an RFC 5322 ``.eml`` file."""

    #: Null: ``<server.data_dir>/outbox``; relative paths are under the project root.
    dir: str | None = None



class OutboxMailer:
    """Writes each message to ``<dir>/<timestamp>-<uuid>.eml`` (atomically); delivers nothing.

    The embedded default: development and tests read what would have been sent.
    Bcc recipients are written as a first ``X-Outbox-Bcc`` header so they can be checked.
    """

    def __init__(self, config: OutboxConfig | None = None, *, app: Any = None, dir: Path | None = None) -> None:
        config = config or OutboxConfig()
        if dir is None:
            if app is None:
                raise MailerError("the outbox mailer needs the app or a folder", permanent=True)
            from plugboard import keys

            root = app[keys.SETTINGS].root
            dir = root / config.dir if config.dir else root / app[keys.CORE_CONFIG].server.data_dir / "outbox"
        self.dir = Path(dir)

    async def start(self) -> None:
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        if not os.access(self.dir, os.W_OK):
            raise MailerError(f"the outbox {self.dir} is not writable", permanent=False)

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        bcc = list(bcc)
        to = recipients(message, bcc)
        data = message.as_bytes(policy=email.policy.SMTP)
        if bcc:
            data = f"X-Outbox-Bcc: {', '.join(bcc)}\r\n".encode() + data
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.eml"
        try:
            await asyncio.to_thread(self._write, name, data)
        except OSError as e:
            raise MailerError(f"cannot write to the outbox {self.dir}: {e}", permanent=False) from e
        return SendResult(message_id=str(message["Message-ID"]), accepted=to)

    def _write(self, name: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.dir / name)

    def messages(self) -> list[Path]:
        """The .eml files written so far, oldest first."""
        return sorted(self.dir.glob("*.eml"), key=lambda p: (p.stat().st_mtime, p.name))
