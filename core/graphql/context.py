"""The per-request context handed to resolvers as their third argument.

One :class:`Context` per GraphQL operation (per HTTP request, or per
WebSocket/SSE operation), built by the transport and filled by each plugin's
``plugboard_context`` hook in plugin order. Attribute and item access are the
same (``context.identity`` or ``context["identity"]``), so plugins written for
either style work.

Besides the values the transport sets, the class declares the fields the
built-in plugins read and auth plugins set, with their defaults, so nobody
guesses with ``getattr``: ``identity_expires_at``, ``roles``, ``api_key``,
``share_subscriptions`` and ``subscription_group``.
"""

from __future__ import annotations

import hmac
import inspect
from typing import TYPE_CHECKING, Any, Awaitable, Collection, Hashable, Iterator, Mapping

from plugboard import keys
from plugboard.graphql.errors import GraphQLError

if TYPE_CHECKING:
    from aiohttp import web


class Context:
    """Request-scoped values: ``app``, ``request``, ``request_id``, ``transport``,
    ``connection_params`` (a WebSocket's ``connection_init`` payload, else None), ``identity``,
    and the declared fields below that ``plugboard_context`` implementations may set."""

    # Class-level defaults: a context that never sets them (most) stores
    # nothing for them, and every WebSocket connection holds a context.

    #: Unix seconds after which ``identity`` is no longer valid (None: never).
    #: WebSocket closes with 4403, SSE ends subscriptions with ``FORBIDDEN``,
    #: and an already-expired identity is refused.
    identity_expires_at: float | None = None
    #: The caller's roles, any collection of names (``"admin"`` opens the jobs API).
    roles: Collection[str] = ()
    #: The API key the caller presented, as the plugin that checked it records
    #: it (None: none); per-key limits and private cache entries follow it.
    api_key: Any = None
    #: False when this context's subscription results must not be shared with
    #: other subscribers (its resolvers read something per connection besides the identity).
    share_subscriptions: bool = True
    #: Added to the sharing key of subscriptions: what, besides the operation,
    #: its variables and the identity, makes results differ (e.g. a tenant id).
    subscription_group: Hashable = None

    def __init__(self, *, app: "web.Application", request: "web.Request | None", request_id: str, transport: str) -> None:
        self.app = app
        self.request = request
        self.request_id = request_id
        self.transport = transport
        self.connection_params: Mapping[str, Any] | None = None
        self.identity: Any = None

    @property
    def providers(self):
        return self.app[keys.PROVIDERS]

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and hasattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def update(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(vars(self))

    def __repr__(self) -> str:
        return f"<Context {self.transport} request_id={self.request_id}>"


_CONTEXT_ONLY = ("context",)
_EVERY_ARGUMENT = ("context", "request", "connection_params")


class ContextBuilder:
    """Runs the ``plugboard_context`` implementations, in plugin order, for one app."""

    def __init__(self, impls: list[tuple[str, Any, tuple[str, ...]]]) -> None:
        # (plugin name, function, argument names) fixed at start-up, so the hot
        # path does no pluggy dispatch.
        self._impls = impls

    async def build(
        self,
        app: "web.Application",
        request: "web.Request | None",
        *,
        request_id: str,
        transport: str,
        connection_params: Mapping[str, Any] | None = None,
    ) -> Context:
        """A new context, filled by every ``plugboard_context`` implementation in plugin order."""
        context = self.start(app, request, request_id=request_id, transport=transport, connection_params=connection_params)
        return context if type(context) is Context else await context

    def start(
        self,
        app: "web.Application",
        request: "web.Request | None",
        *,
        request_id: str,
        transport: str,
        connection_params: Mapping[str, Any] | None = None,
    ) -> "Context | Awaitable[Context]":
        """As :meth:`build`, for hot paths: the Context itself when no hook returned an awaitable, else an awaitable of it.

        The usual request's hooks all answer at once; a coroutine around them
        would be one more frame created and finished per operation.
        """
        context = Context(app=app, request=request, request_id=request_id, transport=transport)
        context.connection_params = connection_params
        for index, (_plugin, function, argnames) in enumerate(self._impls):
            # The two usual signatures called directly, without building keyword mappings.
            if argnames == _EVERY_ARGUMENT:
                result = function(context=context, request=request, connection_params=connection_params)
            elif argnames == _CONTEXT_ONLY:
                result = function(context)
            else:
                args = {"context": context, "request": request, "connection_params": connection_params}
                result = function(**{name: args[name] for name in argnames})
            if result is None:  # the usual answer: nothing to add, nothing to await
                continue
            if inspect.isawaitable(result):
                return self._finish(context, result, index + 1)
            if result:
                context.update(result)
        return context

    async def _finish(self, context: Context, pending: Awaitable[Any], start: int) -> Context:
        # The rest of start() once a hook returned an awaitable.
        result = await pending
        if result:
            context.update(result)
        for _plugin, function, argnames in self._impls[start:]:
            args = {"context": context, "request": context.request, "connection_params": context.connection_params}
            result = function(**{name: args[name] for name in argnames})
            if inspect.isawaitable(result):
                result = await result
            if result:
                context.update(result)
        return context


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def is_admin_token(app: "web.Application", token: str | None) -> bool:
    """True when ``token`` is ``server.admin_token`` (compared in constant time)."""
    configured = app[keys.CORE_CONFIG].server.admin_token
    if not configured or not token:
        return False
    return hmac.compare_digest(str(configured).encode(), token.encode())


def has_admin_role(context: Any) -> bool:
    """The ``admin`` role among the roles an auth plugin put on the context (``context.roles``)."""
    roles = context.get("roles") if context is not None else None
    return bool(roles) and "admin" in roles


def is_admin(context: Any) -> bool:
    """An operator: the ``admin`` role on the context, or ``server.admin_token`` as bearer.

    Auth plugins put roles on the context as ``context.roles``; the token
    comes as ``Authorization: Bearer <token>`` on the request (HTTP, SSE, the
    WebSocket upgrade) or as ``{"authorization": "Bearer <token>"}`` in a
    WebSocket ``connection_init``. Every plugin's admin check is this one.
    """
    if context is None:
        return False
    if has_admin_role(context):
        return True
    app = context.app
    request = context.get("request")
    if request is not None and is_admin_token(app, bearer(request.headers.get("Authorization"))):
        return True
    params = context.get("connection_params")
    if isinstance(params, Mapping):
        value = params.get("authorization")
        if isinstance(value, str) and is_admin_token(app, bearer(value)):
            return True
    return False


__all__ = ["Context", "ContextBuilder", "GraphQLError", "bearer", "has_admin_role", "is_admin", "is_admin_token"]
