"""Resolvers of ``createApiKey``, ``apiKeys`` and ``revokeApiKey`` (admins: the admin role, token, or an ``admin``-scoped key)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.protection.appkeys import API_KEYS


def _keys(context: Any) -> Any:
    if not is_admin(context):
        raise GraphQLError("managing API keys needs an admin", "FORBIDDEN")
    return context.app[API_KEYS]


def _datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise GraphQLError(f"not a date-time: {value!r}", "BAD_USER_INPUT") from None


async def create_api_key(parent: Any, args: dict[str, Any], context: Any, info: Any) -> dict[str, Any]:
    data = args["input"]
    key, secret = await _keys(context).create(
        name=data["name"], owner=data.get("owner"), scopes=data.get("scopes"), expires_at=_datetime(data.get("expiresAt"))
    )
    return {"key": key.as_graphql(), "secret": secret}


async def api_keys(parent: Any, args: dict[str, Any], context: Any, info: Any) -> list[dict[str, Any]]:
    return [k.as_graphql() for k in await _keys(context).list(args.get("owner"))]


async def revoke_api_key(parent: Any, args: dict[str, Any], context: Any, info: Any) -> bool:
    return await _keys(context).revoke(str(args["id"]))


RESOLVERS = {
    "Mutation.createApiKey": create_api_key,
    "Query.apiKeys": api_keys,
    "Mutation.revokeApiKey": revoke_api_key,
}
