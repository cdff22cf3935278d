"""Who may subscribe or publish to a direct channel, and what a topic name may be.

This module owns the topic name rule (:func:`check_topic`), the rule used
when no plugin decides (:func:`default_authorization`) and the call of the
``plugboard_channel_authorize`` hook in plugin order (:func:`authorize`).
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plugboard import keys
from plugboard.plugins.realtime.channels.hub import CHANNELS
from plugboard.plugins.realtime.identity import identity_id

if TYPE_CHECKING:
    from plugboard.graphql.context import Context

__all__ = ["authorize", "check_topic", "default_authorization"]

# Topics end up in SSE ``event:`` lines and Redis keys: no spaces or line breaks.
_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}$")


def check_topic(topic: Any) -> str:
    """``topic`` if it is a valid direct-channel topic name.

    :raises ValueError: not a string of letters, digits and ``_ . : -``
        (200 at most, not starting with punctuation other than ``_``).
    """
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        shown = topic if isinstance(topic, str) else type(topic).__name__
        raise ValueError(
            f"invalid topic {shown!r}: use 1-200 letters, digits and '_.:-', starting with a letter, digit or '_'"
        )
    return topic


def default_authorization(context: "Context", topic: str, action: str = "subscribe", publish: str = "signed_in") -> bool:
    """The rule when no plugin decides.

    Reading: ``public.*`` for everyone, ``user.<id>`` for that user.
    Publishing is a separate permission, on top of reading:
    ``realtime.channels.publish`` (``publish``) says whether anonymous
    clients (``anyone``), signed-in ones only (``signed_in``, the default)
    or no client at all (``nobody``) may publish where they may read.
    """
    user = identity_id(context.identity)
    readable = topic.startswith("public.") or (user is not None and topic == f"user.{user}")
    if action != "publish" or not readable:
        return readable
    if publish == "anyone":
        return True
    return publish == "signed_in" and user is not None


async def authorize(app: web.Application, context: "Context", topic: str, action: str) -> bool:
    """Ask ``plugboard_channel_authorize`` implementations, in plugin order; the first non-None decides.

    Implementations are called one at a time (and awaited when async), so
    later ones are not even called once one has decided. A
    :class:`~plugboard.graphql.errors.GraphQLError` raised by one propagates
    (the caller turns it into its own error form). When none decides,
    :func:`default_authorization` with the app's ``realtime.channels.publish``.
    """
    pm = app[keys.PLUGIN_MANAGER]
    if getattr(pm.hook, "plugboard_channel_authorize", None) is not None:
        # ordered_impls: the plugins: list order, as the hookspec promises (a
        # plain hook call would go last-registered-first).
        for impl in pm.ordered_impls("plugboard_channel_authorize"):
            given = {"context": context, "topic": topic, "action": action}
            result = impl.function(**{name: given[name] for name in impl.argnames})
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return bool(result)
    hub = app.get(CHANNELS)
    publish = hub.config.channels.publish if hub is not None else "signed_in"
    return default_authorization(context, topic, action, publish)
