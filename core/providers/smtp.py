"""The ``smtp`` mailer: delivery through an SMTP server with aiosmtplib, over pooled connections.

A connection is opened (greeting, EHLO, STARTTLS, AUTH) once and then carries
up to ``max_messages`` messages, as nodemailer's pool does: opening one per
message cost more than the message itself (about six round trips, a TLS
handshake with STARTTLS, and the server's per-connection work). At most
``pool_size`` connections are open at once; a sender waits for a free one.
A connection that the server closed, or that sat idle for ``idle_timeout``,
is replaced; a reused connection found dead at ``MAIL FROM`` (nothing of the
message has been transmitted yet) is replaced and the message sent on the
new one, so only an error that may have reached the server surfaces.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, Iterable, Literal

import attrs

from plugboard import validators
from plugboard.providers.mailer import MailerError, SendResult, recipients
from plugboard.units import Duration, Secret

if TYPE_CHECKING:
    import aiosmtplib


@attrs.define(frozen=True, kw_only=True)
class SmtpConfig:
    """The ``smtp`` mailer's server."""

    host: str = "localhost"
    port: int = attrs.field(default=587, validator=validators.port)
    user: str | None = None
    password: Secret | None = None
    #: Upgrade with STARTTLS: ``auto`` (when the server offers it), true (required) or false.
    starttls: Literal["auto"] | bool = "auto"
    #: Implicit TLS from the first byte (port 465); excludes ``starttls: true``.
    tls: bool = False
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
    #: Send ``user``/``password`` over a connection without TLS (a local relay only).
    #: Off: with credentials, STARTTLS is required unless ``tls`` is on.
    allow_plaintext_auth: bool = False
    #: A CA bundle the server's certificate must chain to (null: the system's).
    ca_file: str | None = None
    #: Connections open at once (senders beyond that wait for a free one); 1: one at a time.
    pool_size: int = attrs.field(default=5, validator=validators.positive)
    #: Messages one connection carries before it is closed and a new one opened
    #: (servers such as Exchange cap messages per connection); 1: a connection per message.
    max_messages: int = attrs.field(default=100, validator=validators.positive)
    #: A connection unused this long is closed (servers drop idle clients after a few minutes).
    idle_timeout: Duration = attrs.field(default=30.0, validator=validators.positive)

    def __attrs_post_init__(self) -> None:
        if self.tls and self.starttls is True:
            raise ValueError("tls and starttls exclude each other: tls is for port 465, starttls for 587")
        if self.user and not self.tls and self.starttls is False and not self.allow_plaintext_auth:
            raise ValueError(
                "starttls: false with a user would send the password without TLS; "
                "use starttls (587) or tls (465), or set allow_plaintext_auth: true for a local relay"
            )

    def start_tls(self) -> bool | None:
        """aiosmtplib's ``start_tls``: required whenever credentials would otherwise travel in clear."""
        if self.tls:
            return False
        if self.user and not self.allow_plaintext_auth:
            return True
        return None if self.starttls == "auto" else bool(self.starttls)


@attrs.define(eq=False)
class _Connection:
    client: "aiosmtplib.SMTP"
    sent: int = 0
    last_used: float = attrs.field(factory=time.monotonic)


class _Stale(Exception):
    """A reused connection was dead before any of the message was transmitted."""


class SmtpMailer:
    """Delivers through an SMTP server with aiosmtplib, keeping up to ``pool_size`` connections open."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.pool_size)
        self._local_hostname: str | None = None
        self._reaper: asyncio.TimerHandle | None = None
        #: QUITs in flight (a reference keeps each task alive until it ends).
        self._quitting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._hostname()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle), *self._quitting)

    async def _hostname(self) -> str:
        # aiosmtplib would call socket.getfqdn() (a DNS lookup) on every
        # connect; once per mailer, off the event loop, is enough.
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    def _client(self, local_hostname: str, **overrides: object) -> "aiosmtplib.SMTP":
        import aiosmtplib

        c = self.config
        options: dict[str, object] = {
            "hostname": c.host, "port": c.port, "username": c.user, "password": c.password, "use_tls": c.tls,
            "start_tls": c.start_tls(), "cert_bundle": c.ca_file, "timeout": c.timeout, "local_hostname": local_hostname,
        }
        options.update(overrides)
        return aiosmtplib.SMTP(**options)

    async def check(self) -> None:
        """The server answers its greeting and NOOP (``/readyz``); nothing is sent."""
        import aiosmtplib

        c = self.config
        client = self._client(await self._hostname(), username=None, password=None, start_tls=False, timeout=min(c.timeout, 5.0))
        try:
            await client.connect()
            await client.noop()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            raise MailerError(f"the SMTP server {c.host}:{c.port} does not answer: {type(e).__name__}: {e}", permanent=False) from e
        finally:
            if client.is_connected:
                client.close()

    # -- the pool ------------------------------------------------------------------------

    def _take(self) -> _Connection | None:
        """The most recently used live idle connection (LIFO keeps few connections warm)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected and now - conn.last_used < self.config.idle_timeout:
                return conn
            self._drop(conn)
        return None

    async def _open(self) -> _Connection:
        client = self._client(await self._hostname())
        try:
            await client.connect()  # greeting, EHLO, STARTTLS, AUTH
        except BaseException:
            client.close()
            raise
        return _Connection(client)

    def _give_back(self, conn: _Connection) -> None:
        conn.sent += 1
        conn.last_used = time.monotonic()
        if conn.sent >= self.config.max_messages or not conn.client.is_connected:
            self._quit_later(conn)
            return
        self._idle.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.config.idle_timeout, self._reap)

    def _reap(self) -> None:
        """Close connections idle for ``idle_timeout``; look again while any remain."""
        self._reaper = None
        now = time.monotonic()
        keep = []
        for conn in self._idle:
            if now - conn.last_used >= self.config.idle_timeout:
                self._quit_later(conn)
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            wait = self.config.idle_timeout - (now - min(c.last_used for c in keep))
            self._reaper = asyncio.get_running_loop().call_later(max(wait, 0.05), self._reap)

    def _quit_later(self, conn: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._quit(conn))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    @staticmethod
    def _drop(conn: _Connection) -> None:
        conn.client.close()

    @staticmethod
    async def _quit(conn: _Connection) -> None:
        import aiosmtplib

        try:
            if conn.client.is_connected:
                await asyncio.wait_for(conn.client.quit(), 5.0)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            pass  # it is being closed either way
        finally:
            conn.client.close()

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        import aiosmtplib

        c = self.config
        to = recipients(message, bcc)
        sender = email.utils.parseaddr(str(message["From"]))[1]
        try:
            async with self._slots:
                refused = await self._deliver(message, sender, to)
        except aiosmtplib.SMTPRecipientsRefused as e:
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            permanent = all(r.code >= 500 for r in e.recipients)
            raise MailerError(f"every recipient was refused ({answers})", permanent=permanent) from e
        except aiosmtplib.SMTPResponseException as e:
            # Sender refused, data refused, authentication failed ...: 5xx is final.
            raise MailerError(f"the SMTP server answered {e.code} {e.message}", permanent=e.code >= 500) from e
        except aiosmtplib.SMTPNotSupported as e:
            raise MailerError(f"the SMTP server does not support what the settings ask: {e}", permanent=True) from e
        except aiosmtplib.SMTPException as e:
            # aiosmtplib reports a missing STARTTLS extension as a plain SMTPException;
            # with `starttls: true` the settings ask for what this server cannot do.
            final = c.start_tls() is True and "STARTTLS" in str(e)
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=final) from e
        except (OSError, asyncio.TimeoutError) as e:
            raise MailerError(f"cannot deliver through {c.host}:{c.port}: {type(e).__name__}: {e}", permanent=False) from e
        return SendResult(
            message_id=str(message["Message-ID"]),
            accepted=[a for a in to if a not in refused],
            refused={addr: f"{r.code} {r.message}" for addr, r in refused.items()},
        )

    async def _deliver(self, message: EmailMessage, sender: str, to: list[str]) -> dict[str, "aiosmtplib.SMTPResponse"]:
        """One mail transaction on a pooled connection; a dead reused one is replaced once."""
        import aiosmtplib

        conn = self._take()
        if conn is not None:
            try:
                return await self._on(conn, message, sender, to)
            except _Stale:
                pass  # closed by _on; nothing of this message reached the server
        conn = await self._open()
        try:
            return await self._on(conn, message, sender, to)
        except _Stale as e:
            raise (e.__cause__ or aiosmtplib.SMTPServerDisconnected("the server closed the connection")) from None

    async def _on(self, conn: _Connection, message: EmailMessage, sender: str, to: list[str]) -> dict[str, "aiosmtplib.SMTPResponse"]:
        """The transaction on ``conn``; the connection goes back to the pool only if it is known good."""
        import aiosmtplib

        keep = False
        try:
            refused = await _transaction(conn.client, message, sender, to)
            keep = True
            return refused
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            # A refusal: the transaction was reset (RSET) and the connection may carry the next message.
            keep = True
            raise
        finally:
            # Anything else (a cancelled send, a broken pipe, a timeout) leaves the
            # connection in an unknown state: it is closed, never reused.
            if keep and conn.client.is_connected:
                self._give_back(conn)
            else:
                self._drop(conn)


async def _transaction(client: "aiosmtplib.SMTP", message: EmailMessage, sender: str, to: list[str]) -> dict[str, "aiosmtplib.SMTPResponse"]:
    """MAIL, RCPT, DATA as aiosmtplib's ``send_message`` does, but telling apart a connection
    that was dead before anything was sent (:class:`_Stale`) from a failure afterwards."""
    import aiosmtplib
    from aiosmtplib.email import flatten_message

    utf8 = not (sender + "".join(to)).isascii()
    if utf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("an address has non-ASCII characters and the server does not support SMTPUTF8")
    eight_bit = client.supports_extension("8bitmime")
    data = flatten_message(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
    if utf8:
        options.append("SMTPUTF8")
    if eight_bit:
        options.append("BODY=8BITMIME")
    try:
        await client.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as e:
        raise _Stale() from e
    except aiosmtplib.SMTPResponseException as e:
        if e.code == 421:  # the server is closing this connection (RFC 5321 3.8)
            raise _Stale() from e
        await _reset(client)
        raise
    try:
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        for address in to:
            try:
                await client.rcpt(address, encoding="utf-8" if utf8 else "ascii")
            except aiosmtplib.SMTPRecipientRefused as e:
                refused[address] = aiosmtplib.SMTPResponse(e.code, e.message)
        if len(refused) == len(to):
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()]
            )
        await client.data(data)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        await _reset(client)
        raise
    return refused


async def _reset(client: "aiosmtplib.SMTP") -> None:
    """RSET after a refusal, so the connection can carry the next message (closed if that fails)."""
    import aiosmtplib

    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()
