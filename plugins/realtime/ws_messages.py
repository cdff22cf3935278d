"""What travels on a GraphQL WebSocket: message parsing, encoding and close codes.

This module owns the checks every client message goes through before a
protocol handles it (:class:`InvalidMessage` for one that breaks the
protocol), the JSON encoding of server messages (the core's, as for HTTP
and SSE results), and the close codes and reasons both subprotocols use.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType

from plugboard.graphql import persisted
from plugboard.transports import http

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE = 4406
CLOSE_INIT_TIMEOUT = 4408
CLOSE_SUBSCRIBER_EXISTS = 4409
CLOSE_TOO_MANY = 4429
CLOSE_INTERNAL_ERROR = 4500

ALLOWED_TYPES = ("query", "mutation", "subscription")
#: Nesting a client message may have: the envelope (message, payload,
#: variables) around the variables depth the core allows
#: (``graphql.limits.variables_depth``), with room to spare. Deeper JSON is
#: refused before anything recurses over it: json's decoder itself raises
#: RecursionError somewhere under 1,000 levels, and code walking a value
#: recursively fails far sooner.
MAX_MESSAGE_DEPTH = 64
# A close frame carries at most 125 bytes: two for the code, the rest reason.
_MAX_REASON_BYTES = 123


def close_reason(text: str) -> bytes:
    """A close reason that fits in a close frame (cut, with "...", when too long)."""
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_REASON_BYTES:
        return raw
    return raw[: _MAX_REASON_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON of a server message, encoded as the HTTP and SSE transports encode results (dates as ISO 8601)."""
    return http.dumps(message)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative: the point is not to recurse.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(text: str, max_depth: int = MAX_MESSAGE_DEPTH) -> Any:
    """The JSON value of a client message, nested at most ``max_depth`` levels.

    :raises ValueError: not JSON, or nested deeper (50,000 ``[`` included).
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {max_depth} levels deep") from None
    # Counting brackets runs at C speed: only a message with that many of
    # them (in strings or not) can be nested that deep, and only it is walked.
    nested = isinstance(value, (dict, list)) and text.count("[") + text.count("{") > max_depth
    if nested and _deeper_than(value, max_depth):
        raise ValueError(f"JSON nested more than {max_depth} levels deep")
    return value


class InvalidMessage(Exception):
    """A client message that breaks the protocol (graphql-transport-ws: close 4400)."""


def parse(msg: Any) -> dict[str, Any]:
    """The JSON object of a text (or UTF-8 binary) frame, with a string ``type``."""
    if msg.type == WSMsgType.BINARY:
        try:
            text = msg.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("Invalid message received: binary frame is not UTF-8 text") from None
    else:
        text = msg.data
    try:
        message = loads(text)
    except json.JSONDecodeError:
        raise InvalidMessage("Invalid message received: not valid JSON") from None
    except ValueError as e:
        raise InvalidMessage(f"Invalid message received: {e}") from None
    if not isinstance(message, dict):
        raise InvalidMessage(f"Invalid message received: expected an object, got {type_name(message)}")
    if "type" not in message:
        raise InvalidMessage("Invalid message received: the 'type' property is missing")
    if not isinstance(message["type"], str):
        raise InvalidMessage(f"Invalid message received: 'type' must be a string, got {type_name(message['type'])}")
    return message


def require_id(message: dict[str, Any]) -> str:
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id:
        raise InvalidMessage(f"Invalid message received: {message['type']!r} needs a non-empty string 'id'")
    return op_id


def optional_object(message: dict[str, Any]) -> dict[str, Any] | None:
    payload = message.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidMessage(f"Invalid message received: {message['type']!r} payload must be an object, got {type_name(payload)}")
    return payload


def operation_params(payload: Any) -> tuple[str | None, dict | None, str | None, dict | None]:
    """``(query, variables, operationName, extensions)`` from a subscribe/start payload.

    ``query`` is None only when ``extensions`` asks for a persisted query.
    """
    if not isinstance(payload, dict):
        raise InvalidMessage(f"Invalid message received: the payload must be an object, got {type_name(payload)}")
    query = payload.get("query")
    if not isinstance(query, str) and not (query is None and persisted.requested(payload.get("extensions"))):
        raise InvalidMessage("Invalid message received: the payload needs a 'query' string")
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidMessage("Invalid message received: 'variables' must be an object (or null)")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise InvalidMessage("Invalid message received: 'operationName' must be a string (or null)")
    extensions = payload.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise InvalidMessage("Invalid message received: 'extensions' must be an object (or null)")
    return query, variables, operation_name, extensions



def internal_error(request_id: str, e: Exception | None = None) -> dict[str, Any]:
    """The masked error of a bug (``e`` shown only in debug mode)."""
    message = f"{type(e).__name__}: {e}" if e is not None else "Internal server error"
    return {"message": message, "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}}
