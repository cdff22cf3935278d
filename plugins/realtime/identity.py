"""Who the caller is, for the realtime features: the one place that turns an identity into a user id.

Presence, chat, notifications and the direct channels' default
authorization all key their data by this user id, so an identity given as a
string, an int, a mapping with ``id`` or an object with ``id`` means the
same user everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from plugboard.graphql.errors import GraphQLError

if TYPE_CHECKING:
    from plugboard.graphql.context import Context

__all__ = ["current_user", "identity_id"]


def identity_id(identity: Any) -> str | None:
    """The user id behind ``context.identity``: a string/int, or an object/mapping with ``id``."""
    if identity is None or isinstance(identity, bool):
        return None
    if isinstance(identity, (str, int)):
        value: Any = identity
    elif isinstance(identity, Mapping):
        value = identity.get("id")
    else:
        value = getattr(identity, "id", None)
    if value is None or isinstance(value, bool):
        return None
    text = str(value)
    return text or None


def current_user(context: "Context") -> str:
    """The caller's user id; raises UNAUTHENTICATED for an anonymous caller."""
    user = identity_id(context.identity)
    if user is None:
        raise GraphQLError("authentication required: this field needs a signed-in user", "UNAUTHENTICATED")
    return user
