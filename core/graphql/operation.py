"""The operation lifecycle: parse and validate, then plugin steps around execution.

Every transport (HTTP, multipart, WebSocket, SSE) turns its request into an
:class:`Operation` and hands it to :meth:`OperationRunner.run` (queries and
mutations) or :meth:`OperationRunner.subscribe`. Steps contributed through
``plugboard_operation_steps`` wrap execution Starlette-style: each gets the
operation and ``call_next``; the chain is composed once at start-up. Steps
read the request through :attr:`Operation.document` (a Tartiflette-free
view) and key caches with :func:`operation_key`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Mapping

import attrs
from multidict import CIMultiDict

from plugboard.graphql import persisted as persisted_queries
from plugboard.graphql.context import is_admin
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.limits import check_json_depth
from plugboard.graphql.shared_streams import SharedStreams

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.graphql.context import Context
    from plugboard.graphql.document import DocumentView
    from plugboard.graphql.engine import GraphQLEngine
    from plugboard.graphql.parsed import ParsedDocument
    from plugboard.graphql.persisted import PersistedQueryStore

logger = logging.getLogger("plugboard.graphql")

CallNext = Callable[["Operation"], Awaitable[Any]]
#: ``async def step(operation, call_next)`` — see ``plugboard_operation_steps``.
OperationStep = Callable[["Operation", CallNext], Awaitable[Any]]


class EncodedResult(dict):
    """A result a step already holds as JSON (a response-cache hit): the HTTP
    transport sends :attr:`encoded` as the body instead of serialising the
    dict again; every other reader sees an ordinary result dict. A step that
    changes a result it got from ``call_next`` returns a plain ``dict`` copy.
    """

    __slots__ = ("encoded",)

    def __init__(self, result: Mapping[str, Any], encoded: bytes) -> None:
        super().__init__(result)
        self.encoded = encoded


class OperationRejected(Exception):
    """A request-level error: the operation never starts executing.

    Transports answer with their own form: an HTTP status (400/405/...), a
    WebSocket ``error`` message.
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        invalid_document: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or [{"message": message}]
        self.headers = dict(headers or {})
        #: The document does not parse or validate, or does not hold the
        #: operation asked for: graphql-sse reports these as a stream's result.
        self.invalid_document = invalid_document


@attrs.define(kw_only=True)
class Operation:
    """One GraphQL operation on its way through the lifecycle."""

    #: None only until :meth:`OperationRunner.load_persisted` finds the persisted document.
    query: str | None
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None
    context: "Context"
    transport: str
    #: Set by the runner once parsed: the engine's document and the operation type.
    parsed: "ParsedDocument | None" = None
    operation_type: str | None = None
    #: Headers a step wants on the response (``RateLimit``, ``Cache-Control``,
    #: ``Retry-After``), where the transport has a response of its own: HTTP,
    #: and SSE's distinct-connection stream. Repeated names are kept.
    response_headers: CIMultiDict[str] = attrs.field(factory=CIMultiDict)
    #: Free space for steps to talk to each other.
    state: dict[str, Any] = attrs.field(factory=dict)
    _view: "DocumentView | None" = attrs.field(default=None, init=False, repr=False)
    _done: "list[Callable[[Operation, Any], None]] | None" = attrs.field(default=None, init=False, repr=False)

    def add_done_callback(self, callback: "Callable[[Operation, Any], None]") -> None:
        """Call ``callback(operation, outcome)`` once the step chain has finished.

        ``outcome`` is the result (for a subscription, its result stream), or
        the exception that ended the chain (a refusal, a cancellation). For
        steps that only observe (metrics, usage): such a step can be a plain
        function that registers a callback and returns ``call_next(operation)``,
        adding no coroutine around the execution. Callbacks run in the order
        they were added; one that raises is logged and the others still run.
        """
        if self._done is None:
            self._done = []
        self._done.append(callback)

    def _finished(self, outcome: Any) -> None:
        for callback in self._done or ():
            try:
                callback(self, outcome)
            except Exception:  # noqa: BLE001 - an observer must not change the answer
                logger.exception("an operation's done callback %r failed", callback)

    @property
    def app(self) -> "web.Application":
        return self.context.app

    @property
    def document(self) -> "DocumentView":
        """The operation to run as a :class:`~plugboard.graphql.document.DocumentView`.

        Built on first access, with ``variables`` as they are then, and kept
        for the other steps; its variable-free part is cached with the
        document, so the same query text costs one build per app. Raises
        :class:`~plugboard.graphql.errors.GraphQLError` (a 400 for the
        client) when the schema has no root type for the operation.
        """
        view = self._view
        if view is None:
            if self.parsed is None:
                raise RuntimeError("the operation is not prepared: its document has not been parsed yet")
            view = self._view = self.parsed.view(self.operation_name, self.variables)
        return view

    @staticmethod
    def error_result(message: str, code: str = "BAD_REQUEST", **extensions: Any) -> dict[str, Any]:
        """A result carrying one error, for steps that answer without executing."""
        return {"data": None, "errors": [GraphQLError(message, code, extensions=extensions).formatted()]}


class OperationRunner:
    """Parses, validates, picks the operation, then runs the step chain."""

    def __init__(
        self,
        engine: "GraphQLEngine",
        steps: list[tuple[str, OperationStep]],
        *,
        shared: SharedStreams | None = None,
        introspection: bool = True,
        persisted: "PersistedQueryStore | None" = None,
    ) -> None:
        self.engine = engine
        self.steps = steps
        #: Where persisted queries are kept (``plugboard_persisted_queries``); None: not supported.
        self.persisted = persisted
        #: ``graphql.introspection``: when False only admins may select
        #: ``__schema`` and ``__type`` (``__typename`` is always allowed).
        self.introspection = introspection
        #: Groups of subscribers sharing one execution per event (None: off).
        self.shared = shared
        self._run_chain = self._compose(self._execute)
        self._subscribe_chain = self._compose(self._subscribe)

    def _compose(self, final: CallNext) -> CallNext:
        handler = final
        for _plugin, step in reversed(self.steps):
            handler = _link(step, handler)
        return handler

    async def load_persisted(self, op: Operation) -> None:
        """Resolve ``extensions.persistedQuery`` (:mod:`plugboard.graphql.persisted`) before :meth:`prepare`.

        Transports call it when a request has ``extensions``; it does nothing
        unless they ask for a persisted query. Raises OperationRejected.
        """
        if persisted_queries.requested(op.extensions):
            await persisted_queries.load(self.persisted, op, self.engine.parse)

    def prepare(self, op: Operation, *, allowed_types: tuple[str, ...] | None = None) -> None:
        """Parse and validate, choose the operation; raise OperationRejected on request errors."""
        if op.variables or op.extensions:
            depth = self.engine.options.limits.variables_depth
            try:
                check_json_depth(op.variables, depth, "variables")
                check_json_depth(op.extensions, depth, "extensions")
            except GraphQLError as e:
                raise OperationRejected(e.message, 400, errors=[e.formatted()]) from None
        if op.query is None:  # a persisted query nobody loaded (see load_persisted)
            raise OperationRejected("'query' is missing: the request must carry a GraphQL document", 400)
        parsed = self.engine.parse(op.query)
        if parsed.errors:
            raise OperationRejected(parsed.errors[0]["message"], 400, errors=parsed.errors, invalid_document=True)
        types = parsed.operation_types
        if op.operation_name is None:
            if len(types) != 1:
                raise OperationRejected(
                    "the document has several operations: operationName is required", 400, invalid_document=True
                )
            op_type = next(iter(types.values()))
        else:
            op_type = types.get(op.operation_name)
            if op_type is None:
                raise OperationRejected(f"unknown operation named {op.operation_name!r}", 400, invalid_document=True)
        if allowed_types is not None and op_type not in allowed_types:
            raise OperationRejected(
                f"{op_type} operations are not allowed here", 405 if op_type == "mutation" else 400
            )
        op.parsed = parsed
        op.operation_type = op_type

    # Every coroutine between a request's task and the resolvers' awaits is
    # resumed at each of those awaits (a database query makes several): a
    # level less here is CPU saved on every operation. So one coroutine,
    # _through(), converts the steps' rejections and calls the done
    # callbacks, and run() and _execute() hand back coroutines rather than
    # awaiting them.

    def run(self, op: Operation) -> Awaitable[dict[str, Any]]:
        """Execute a prepared query or mutation through the step chain (await the result)."""
        self._check_introspection(op)
        return self._through(self._run_chain, op)

    def subscribe(self, op: Operation) -> Awaitable[AsyncIterator[dict[str, Any]]]:
        """Start a prepared subscription through the step chain (await the result stream)."""
        self._check_introspection(op)
        return self._through(self._subscribe_chain, op)

    async def _through(self, chain: CallNext, op: Operation) -> Any:
        outcome: Any = None
        try:
            outcome = await chain(op)
            return outcome
        except BaseException as e:
            outcome = e
            if isinstance(e, GraphQLError) and self.steps:
                raise _rejection(e) from e
            raise
        finally:
            if op._done is not None:
                op._finished(outcome)

    def _check_introspection(self, op: Operation) -> None:
        # Here rather than in prepare(): whether the client is an admin
        # needs the context, which transports build after prepare().
        if self.introspection or op.parsed is None or not op.parsed.introspection:
            return
        if is_admin(op.context):
            return
        error = GraphQLError(
            "introspection is disabled on this server (graphql.introspection: false): "
            "__schema and __type are for admins only",
            "INTROSPECTION_DISABLED",
        )
        raise OperationRejected(error.message, 400, errors=[error.formatted()])

    def _execute(self, op: Operation) -> Awaitable[dict[str, Any]]:
        return self.engine.execute(
            op.parsed, operation_name=op.operation_name, context=op.context, variables=op.variables
        )

    async def _subscribe(self, op: Operation) -> AsyncIterator[dict[str, Any]]:
        def start() -> AsyncIterator[dict[str, Any]]:
            return self.engine.subscribe(
                op.parsed, operation_name=op.operation_name, context=op.context, variables=op.variables
            )

        if self.shared is None or not op.context.share_subscriptions:
            return start()
        return self.shared.join(operation_key(op), start)


def operation_key(op: Operation) -> str:
    """A key equal for operations that give equal results: for caches and shared subscriptions.

    It covers the document text with layout, commas and comments dropped,
    the operation name, the variables, and the scope results are private to:
    ``repr(context.identity)`` and ``context.subscription_group`` (where a
    plugin's resolvers depend on more than the identity). Anything else a
    resolver reads must go into one of those two, or the operation must not
    be cached or shared. The key is a hex digest, fit for a Redis key; it
    stays equal across processes as long as the identity's ``repr`` does
    (strings, numbers, dicts of them).
    """
    document = op.parsed.normalized if op.parsed is not None else op.query
    identity = op.context.identity
    parts = (
        document,
        op.operation_name,
        op.variables or None,
        repr(identity) if identity is not None else None,
        op.context.subscription_group,
    )
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _link(step: OperationStep, call_next: CallNext) -> CallNext:
    def link(op: Operation) -> Awaitable[Any]:
        return step(op, call_next)

    return link


def _rejection(error: GraphQLError) -> OperationRejected:
    # A step rejecting the operation (rate limit, depth limit) uses the
    # client error's own status and headers on transports that have them.
    return OperationRejected(error.message, error.http_status, errors=[error.formatted()], headers=error.headers)
