"""``plugboard apikey create|list|revoke|limits``: API keys from the command line, in the app's records store."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

from plugboard.commands import Command, CommandContext
from plugboard.graphql.errors import GraphQLError


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="apikey_action", required=True)
    create = sub.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--owner")
    create.add_argument("--scope", action="append", dest="scopes", help="read, write, admin or a plugin's scope (repeatable; default read)")
    create.add_argument("--expires", help="ISO date-time, e.g. 2027-01-01T00:00:00+00:00")
    _limit_arguments(create)
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--owner")
    revoke = sub.add_parser("revoke", help="revoke a key on every instance")
    revoke.add_argument("id")
    limits = sub.add_parser("limits", help="set a key's own request limit and cost budget (those not given: the deployment's)")
    limits.add_argument("id")
    _limit_arguments(limits)


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max", type=int, help="requests per window (replaces protection.requests.per_key.max)")
    parser.add_argument("--window-ms", type=int, help="that window in ms (default: per_key's)")
    parser.add_argument("--budget", type=int, help="cost units per budget window (replaces protection.budget.max)")


def _limits(args: argparse.Namespace) -> Any:
    from plugboard.plugins.protection.apikeys import KeyLimits

    if args.window_ms is not None and args.max is None:
        raise ValueError("--window-ms needs --max")
    rate = {"max": args.max, "windowMs": args.window_ms} if args.max is not None else None
    return KeyLimits.from_input(rate, args.budget)


def _describe(limits: Any) -> str:
    parts = []
    if limits.rate_limit_max is not None:
        window = f"/{limits.rate_limit_window_ms}ms" if limits.rate_limit_window_ms else ""
        parts.append(f"max={limits.rate_limit_max}{window}")
    if limits.cost_budget is not None:
        parts.append(f"budget={limits.cost_budget}")
    return " ".join(parts) or "-"


async def _main(ctx: CommandContext, app: Any) -> int:
    from plugboard.plugins.protection.appkeys import API_KEYS

    args = ctx.args
    async with ctx.running(app):
        keys = app.get(API_KEYS)
        if keys is None:
            print("plugboard apikey: protection.api_keys is off in these settings", file=sys.stderr)
            return 2
        if args.apikey_action == "create":
            expires = dt.datetime.fromisoformat(args.expires) if args.expires else None
            key, secret = await keys.create(name=args.name, owner=args.owner, scopes=args.scopes, expires_at=expires, limits=_limits(args))
            print(f"id:     {key.id}\nprefix: {key.prefix}\nscopes: {' '.join(key.scopes)}\nlimits: {_describe(key.limits)}\nkey:    {secret}\n(the key is shown this once)")
        elif args.apikey_action == "list":
            for key in await keys.list(args.owner):
                state = "revoked" if key.revoked_at else ("expired" if key.expires_at and key.expires_at <= dt.datetime.now(dt.timezone.utc) else "active")
                print(f"{key.id}  {key.prefix}  {state:8}  {','.join(key.scopes):20}  {key.owner or '-':16}  {_describe(key.limits):24}  {key.name}")
        elif args.apikey_action == "limits":
            key = await keys.set_limits(args.id, _limits(args))
            if key is None:
                print(f"plugboard apikey: no key {args.id}", file=sys.stderr)
                return 1
            print(f"{key.id}  {_describe(key.limits)}")
        else:
            if not await keys.revoke(args.id):
                print(f"plugboard apikey: no active key {args.id}", file=sys.stderr)
                return 1
            print(f"revoked {args.id}")
    return 0


def run(ctx: CommandContext) -> int:
    try:
        return asyncio.run(_main(ctx, ctx.build_app()))
    except (GraphQLError, ValueError) as e:
        print(f"plugboard apikey: {e}", file=sys.stderr)
        return 2


def commands() -> list[Command]:
    return [Command("apikey", "create, list and revoke API keys", run, _arguments)]
