"""Real SMTP and S3 servers on free loopback ports, on threads of the test process.

:class:`SmtpServer` is aiosmtpd, keeping every message it accepts;
:class:`S3Server` is moto in server mode (S3 and the other AWS APIs moto
serves). Both listen on 127.0.0.1 only and stop with :meth:`stop` or the
context manager. Their packages (``aiosmtpd``, ``moto[server]``) are imported
on start, so importing this module costs nothing::

    with SmtpServer() as smtp, S3Server() as s3:
        ...  # smtp.host, smtp.port, smtp.messages; s3.endpoint_url, s3.client_kwargs()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from plugboard.testing_servers import free_port

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = ["SmtpServer", "SmtpMessage", "S3Server", "default_refusal"]

# How many fresh ports to try when the one picked by free_port() is taken by
# someone else before the server binds it.
_PORT_ATTEMPTS = 3


# ---------------------------------------------------------------------------
# SMTP: aiosmtpd on a thread of the test process
# ---------------------------------------------------------------------------


@attrs.define(frozen=True)
class SmtpMessage:
    """One message an :class:`SmtpServer` accepted."""

    #: The envelope sender (``MAIL FROM``).
    mail_from: str
    #: The envelope recipients the server accepted, in order.
    rcpt_tos: list[str]
    #: The message as received, parsed with the ``default`` policy.
    message: "EmailMessage"
    #: The bytes as received.
    raw: bytes


def default_refusal(address: str) -> str | None:
    """``reject…@`` recipients get a permanent 550, ``busy…@`` a temporary 451; others are accepted."""
    local = address.partition("@")[0]
    if local.startswith("reject"):
        return "550 5.1.1 no such user here"
    if local.startswith("busy"):
        return "451 4.3.0 try again later"
    return None


class _SmtpHandler:
    def __init__(self, refuse: Callable[[str], str | None], messages: list[SmtpMessage]) -> None:
        self.refuse = refuse
        self.messages = messages

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        reply = self.refuse(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.messages.append(SmtpMessage(envelope.mail_from, list(envelope.rcpt_tos), message, raw))
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on a free loopback port that keeps what it receives.

    Plain SMTP (no TLS, no AUTH). Accepted mail lands in :attr:`messages`;
    ``refuse(address)`` may answer a ``RCPT TO`` with an SMTP reply instead
    (:func:`default_refusal`: ``reject…@`` gets 550, ``busy…@`` gets 451).

    :param refuse: maps a recipient to a refusal reply, or None to accept.
    """

    host = "127.0.0.1"

    def __init__(self, *, refuse: Callable[[str], str | None] | None = default_refusal) -> None:
        self.refuse = refuse or (lambda address: None)
        self.port: int = 0
        self.messages: list[SmtpMessage] = []
        self._controller: Any = None

    def start(self) -> "SmtpServer":
        """Start the server thread and wait until it answers."""
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            raise RuntimeError("SmtpServer is already running")
        for attempt in range(_PORT_ATTEMPTS):
            self.port = free_port()
            controller = Controller(_SmtpHandler(self.refuse, self.messages), hostname=self.host, port=self.port)
            try:
                controller.start()
            except OSError:  # someone took the port before the server bound it
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                continue
            self._controller = controller
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server thread (what it received stays in :attr:`messages`)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpServer {self.host}:{self.port} {len(self.messages)} messages>"


# ---------------------------------------------------------------------------
# S3: moto in server mode on a thread of the test process
# ---------------------------------------------------------------------------


class S3Server:
    """moto's S3 (and every other AWS API moto serves) on a free loopback port.

    Any S3 client reaches it through :attr:`endpoint_url` with the dummy
    credentials below; :meth:`client_kwargs` has them ready for
    ``aiobotocore``/``boto3`` ``create_client("s3", **kwargs)``. Moto keeps its
    state per process: :meth:`reset` empties every bucket and the rest.

    :param region: the region clients should name.
    """

    host = "127.0.0.1"
    access_key = "testing"
    secret_key = "testing"

    def __init__(self, *, region: str = "us-east-1") -> None:
        self.region = region
        self.port: int = 0
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``session.create_client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def start(self) -> "S3Server":
        """Start moto's server thread; returns once it listens."""
        from moto.server import ThreadedMotoServer

        if self._server is not None:
            raise RuntimeError("S3Server is already running")
        # Port 0: the kernel picks the port while binding, so there is no race.
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        server.start()
        self._server = server
        self.port = server.get_host_and_port()[1]
        return self

    def reset(self) -> None:
        """Forget every bucket and object (moto's ``/moto-api/reset``)."""
        import urllib.request

        if self._server is None:
            raise RuntimeError("S3Server is not running")
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()

    def stop(self) -> None:
        """Stop the server thread."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<S3Server {self.endpoint_url} {state}>"
