"""The smtp mailer's connection pool, against a real aiosmtpd: connections are reused,
capped, replaced when the server closed them (nothing sent twice, nothing lost),
reset after a refusal, and never reused after a send was cut off."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.controller import Controller
from email_testkit import SmtpHandler

from plugboard.providers.mailer import MailerError, build_message
from plugboard.providers.smtp import SmtpConfig, SmtpMailer
from plugboard.testing_servers import free_port


class SessionHandler(SmtpHandler):
    """Records which connection (aiosmtpd session) carried each message, and the QUITs."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[int] = []
        self.open_now = 0
        self.most_open = 0
        self.quits = 0
        self.refuse_mail_after = 0  # 421 at MAIL FROM on a connection's (n+1)th message

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        return responses

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        self.open_now -= 1
        return "221 Bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        count = getattr(session, "pb_count", 0)
        if self.refuse_mail_after and count >= self.refuse_mail_after:
            return "421 4.7.0 too many messages on this connection"
        session.pb_count = count + 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.append(id(session))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def sink():
    controllers = []

    def make(**server_kwargs) -> tuple[int, SessionHandler]:
        handler = SessionHandler()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), server_hostname="localhost", **server_kwargs)
        controller.start()
        controllers.append(controller)
        return controller.port, handler

    yield make
    for controller in controllers:
        controller.stop()


def message(to: str = "ann@example.com"):
    return build_message(sender="Plugboard <noreply@example.com>", to=[to], subject="Hello", text="Hi")


def mailer(port: int, **options) -> SmtpMailer:
    return SmtpMailer(SmtpConfig(host="127.0.0.1", port=port, starttls=False, timeout=5.0, **options))


async def test_one_connection_carries_consecutive_messages_and_close_quits(sink):
    port, handler = sink()
    smtp = mailer(port)
    await smtp.start()
    for i in range(5):
        result = await smtp.send(message(f"u{i}@example.com"))
        assert result.accepted == [f"u{i}@example.com"]
    assert len(handler.messages) == 5 and len(set(handler.sessions)) == 1
    await smtp.close()
    assert handler.quits == 1


async def test_concurrent_sends_are_capped_at_pool_size(sink):
    port, handler = sink()
    handler.delay = 0.05
    smtp = mailer(port, pool_size=2)
    await asyncio.gather(*(smtp.send(message(f"u{i}@example.com")) for i in range(10)))
    assert len(handler.messages) == 10
    assert handler.most_open == 2 and len(set(handler.sessions)) == 2
    await smtp.close()


async def test_max_messages_per_connection(sink):
    port, handler = sink()
    smtp = mailer(port, max_messages=2)
    for i in range(5):
        await smtp.send(message(f"u{i}@example.com"))
    await smtp.close()
    assert len(handler.messages) == 5 and len(set(handler.sessions)) == 3
    assert handler.quits == 3


async def test_max_messages_1_is_a_connection_per_message(sink):
    port, handler = sink()
    smtp = mailer(port, max_messages=1)
    for i in range(3):
        await smtp.send(message(f"u{i}@example.com"))
    await smtp.close()
    assert len(set(handler.sessions)) == 3


async def test_a_connection_the_server_timed_out_is_replaced(sink):
    # aiosmtpd closes a connection idle for 0.3 s (421 and FIN).
    port, handler = sink(timeout=0.3)
    smtp = mailer(port)
    await smtp.send(message("a@example.com"))
    await asyncio.sleep(0.6)
    await smtp.send(message("b@example.com"))
    assert [m["to"] for m in handler.messages] == [["a@example.com"], ["b@example.com"]]
    assert len(set(handler.sessions)) == 2
    await smtp.close()


async def test_a_421_at_mail_from_on_a_reused_connection_resends_on_a_new_one(sink):
    # The server refuses a third message on one connection (as Exchange's per-connection cap):
    # nothing of it was transmitted, so it goes out on a new connection, once.
    port, handler = sink()
    handler.refuse_mail_after = 2
    smtp = mailer(port)
    for i in range(5):
        await smtp.send(message(f"u{i}@example.com"))
    assert [m["to"][0] for m in handler.messages] == [f"u{i}@example.com" for i in range(5)]
    assert len(set(handler.sessions)) == 3
    await smtp.close()


async def test_a_dead_pooled_connection_is_not_reused(sink):
    port, handler = sink()
    smtp = mailer(port)
    await smtp.send(message("a@example.com"))
    [conn] = smtp._idle
    # The server side vanished without a word (the pool only finds out at MAIL FROM).
    conn.client.transport.abort()
    await asyncio.sleep(0.05)
    await smtp.send(message("b@example.com"))
    assert [m["to"] for m in handler.messages] == [["a@example.com"], ["b@example.com"]]
    await smtp.close()


async def test_a_refused_recipient_resets_and_keeps_the_connection(sink):
    port, handler = sink()
    smtp = mailer(port)
    with pytest.raises(MailerError) as e:
        await smtp.send(message("reject@example.com"))
    assert e.value.permanent and "550" in str(e.value)
    with pytest.raises(MailerError) as e:
        await smtp.send(message("busy@example.com"))
    assert not e.value.permanent and "451" in str(e.value)
    await smtp.send(message("ann@example.com"))
    assert [m["to"] for m in handler.messages] == [["ann@example.com"]]
    assert handler.most_open == 1  # the same connection throughout (RSET after each refusal)
    await smtp.close()


async def test_a_send_cut_off_mid_transaction_never_reuses_its_connection(sink):
    port, handler = sink()
    handler.delay = 1.0
    smtp = mailer(port)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(smtp.send(message("slow@example.com")), 0.2)
    assert smtp._idle == []
    handler.delay = 0
    await smtp.send(message("ann@example.com"))
    await asyncio.sleep(1.0)  # the cut-off transaction's DATA completes on the server meanwhile
    sessions = {m["to"][0]: s for m, s in zip(handler.messages, handler.sessions)}
    assert sessions["ann@example.com"] != sessions.get("slow@example.com")
    await smtp.close()


async def test_a_server_that_is_down_is_a_temporary_error(sink):
    smtp = mailer(free_port())
    with pytest.raises(MailerError) as e:
        await smtp.send(message())
    assert e.value.permanent is False
    assert smtp._idle == []
