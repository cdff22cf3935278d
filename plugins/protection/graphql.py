"""Resolvers of ``createApiKey``, ``apiKeys``, ``revokeApiKey``, ``setApiKeyLimits`` and ``apiUsage``.

Admins (the admin role, the admin token, or an ``admin``-scoped key) manage
every key. Anyone signed in lists and revokes the keys they own (``owner``
equal to their identity's id); someone else's key id reads as unknown
(``revokeApiKey`` is false), so ids cannot be probed. Creating keys stays
with admins: scopes are privileges an admin grants.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.protection.apikeys import KeyLimits
from plugboard.plugins.protection.appkeys import API_KEYS


def _keys(context: Any) -> Any:
    if not is_admin(context):
        raise GraphQLError("managing API keys needs an admin", "FORBIDDEN")
    return context.app[API_KEYS]


async def create_api_key(parent: Any, args: dict[str, Any], context: Any, info: Any) -> dict[str, Any]:
    data = args["input"]
    key, secret = await _keys(context).create(
        name=data["name"],
        owner=data.get("owner"),
        scopes=data.get("scopes"),
        expires_at=data.get("expiresAt"),
        limits=KeyLimits.from_input(data.get("rateLimit"), data.get("costBudget")),
    )
    return {"key": key.as_graphql(), "secret": secret}


async def set_api_key_limits(parent: Any, args: dict[str, Any], context: Any, info: Any) -> dict[str, Any]:
    limits = KeyLimits.from_input(args.get("rateLimit"), args.get("costBudget"))
    key = await _keys(context).set_limits(str(args["id"]), limits)
    if key is None:
        raise GraphQLError(f"no API key {args['id']!r}", "NOT_FOUND")
    return key.as_graphql()


def _own(context: Any) -> str | None:
    """None for admins (every key); else the caller's identity id, whose keys they may see."""
    if is_admin(context):
        return None
    identity = context.identity
    ident = identity.get("id") if isinstance(identity, dict) else getattr(identity, "id", identity)
    if ident is None:
        raise GraphQLError("sign in to list or revoke your API keys", "UNAUTHENTICATED")
    return str(ident)


async def api_keys(parent: Any, args: dict[str, Any], context: Any, info: Any) -> list[dict[str, Any]]:
    owner = _own(context)
    if owner is not None and args.get("owner") not in (None, owner):
        raise GraphQLError("only admins list other owners' API keys", "FORBIDDEN")
    return [k.as_graphql() for k in await context.app[API_KEYS].list(owner or args.get("owner"))]


async def revoke_api_key(parent: Any, args: dict[str, Any], context: Any, info: Any) -> bool:
    return await context.app[API_KEYS].revoke(str(args["id"]), owner=_own(context))


async def api_usage(parent: Any, args: dict[str, Any], context: Any, info: Any) -> list[dict[str, Any]]:
    from plugboard.plugins.protection.usage import USAGE

    if not is_admin(context):
        raise GraphQLError("usage analytics are for admins", "FORBIDDEN")
    # Rows are per minute, so the default range ends at the next minute
    # boundary: it includes the current minute and reads the same all minute.
    now = dt.datetime.now(dt.timezone.utc)
    end = args.get("to") or now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    start = args.get("from") or end - dt.timedelta(days=1)
    return await context.app[USAGE].query(
        start=start,
        end=end,
        group_by=args.get("groupBy") or (),
        api_key=args.get("key"),
        user=args.get("user"),
        operation=args.get("operation"),
    )


USAGE_RESOLVERS = {"Query.apiUsage": api_usage}

RESOLVERS = {
    "Mutation.createApiKey": create_api_key,
    "Query.apiKeys": api_keys,
    "Mutation.revokeApiKey": revoke_api_key,
    "Mutation.setApiKeyLimits": set_api_key_limits,
}
