"""The one bounded queue with the drop-oldest/close policy, and the Context fields plugins read."""

from __future__ import annotations

import logging

import pytest

from plugboard.boundedqueue import BoundedQueue
from plugboard.graphql.context import Context


class Named(BoundedQueue[int]):
    __slots__ = ()

    def _log_dropped(self) -> None:
        logging.getLogger("test.queue").warning("dropped %d", self.dropped)

    def _log_closed(self) -> None:
        logging.getLogger("test.queue").warning("closed")


def test_drop_oldest_counts_and_warns_at_most_once_a_second(caplog):
    queue = Named(3, "drop_oldest")
    for i in range(10):
        assert queue.offer(i)
    assert [queue.take() for _ in range(len(queue))] == [7, 8, 9]
    assert queue.dropped == 7 and not queue.overflowed
    assert [r.getMessage() for r in caplog.records] == ["dropped 1"]


def test_close_refuses_and_empties(caplog):
    queue = Named(2, "close")
    assert queue.offer(1) and queue.offer(2)
    assert not queue.offer(3)
    assert queue.overflowed and len(queue) == 0 and queue.dropped == 0
    assert not queue.offer(4)
    assert [r.getMessage() for r in caplog.records] == ["closed"]


def test_bad_limits_and_policies_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        BoundedQueue(0)
    with pytest.raises(ValueError, match="unknown overflow policy"):
        BoundedQueue(1, "block")  # type: ignore[arg-type]


def test_no_instance_dict():
    assert not hasattr(Named(1), "__dict__")


def test_context_declares_the_fields_plugins_read():
    context = Context(app=None, request=None, request_id="r", transport="test")  # type: ignore[arg-type]
    assert context.identity_expires_at is None and context.roles == ()
    assert context.share_subscriptions is True and context.subscription_group is None
    context.update({"roles": ["admin"], "identity_expires_at": 5.0})
    assert context["roles"] == ["admin"] and context.get("identity_expires_at") == 5.0
