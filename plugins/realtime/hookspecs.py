"""Hooks the real-time plugin adds for other plugins (registered via ``plugboard_addhooks``)."""

from __future__ import annotations

from typing import Any, Awaitable

from plugboard import hookspec


@hookspec
def plugboard_channel_authorize(context: Any, topic: str, action: str) -> bool | None | Awaitable[bool | None]:
    """Decide whether a client may use a direct channel topic (``/events``, ``/ws``).

    Called for each topic a client asks for, in plugin order, possibly
    ``async``. Return ``True`` to allow, ``False`` to refuse; ``None`` leaves
    the decision to other plugins. If every implementation returns ``None``
    the topic is refused unless it starts with ``public.``, or it is
    ``user.<id>`` and ``context.identity`` is that user; publishing there
    also needs ``realtime.channels.publish`` to allow the client
    (``signed_in`` by default: anonymous clients only read). Whatever the
    hook decides, client publishes stay within
    ``realtime.channels.max_payload_size`` and ``publish_rate``.

    :param context: the request context (``context.identity`` is the user).
    :param topic: the topic asked for, e.g. ``chat.42`` or ``public.news``.
    :param action: ``"subscribe"`` or ``"publish"``.
    :returns: True, False or None.
    """
