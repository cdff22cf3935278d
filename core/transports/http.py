"""GraphQL over HTTP (the graphql-http spec), JSON and multipart, on one path.

POST ``application/json`` runs queries and mutations; GET runs queries only
(a mutation over GET is 405). Responses are ``application/graphql-response+json``
when the client accepts it, with that media type's status codes (400 for a
document that does not parse or validate), else ``application/json`` (200 for
any well-formed request, as the spec asks for legacy clients). Multipart
requests follow the GraphQL multipart request spec; GET and multipart need a
preflight-forcing header (Apollo's CSRF prevention).
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache, partial
from typing import Any, Mapping

import orjson
from aiohttp import web
from multidict import CIMultiDict

from plugboard import keys
from plugboard.graphql.context import Context
from plugboard.graphql import persisted
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.operation import EncodedResult, Operation, OperationRejected
from plugboard.middleware import REQUEST_ID
from plugboard.transports import upload_rules
from plugboard.transports.multipart import MultipartError, read_multipart, request_media_type

logger = logging.getLogger("plugboard.http")

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
_SIMPLE_CONTENT_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
_PREFLIGHT_HEADERS = ("x-apollo-operation-name", "apollo-require-preflight", "graphql-require-preflight")
CSRF_MESSAGE = (
    "This operation has been blocked as a potential Cross-Site Request Forgery (CSRF). "
    "Please either specify a 'content-type' header (with a type that is not one of "
    "application/x-www-form-urlencoded, multipart/form-data, text/plain) or provide a "
    "non-empty value for one of the following headers: " + ", ".join(_PREFLIGHT_HEADERS)
)


class RequestError(Exception):
    """A malformed GraphQL-over-HTTP request, answered with ``status``."""

    def __init__(self, message: str, status: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = dict(headers or {})


# Clients send a handful of distinct Accept headers: each is parsed once.
# 64 entries of at most max_field_size (16 KiB) bound what a client can fill.
@lru_cache(maxsize=64)
def choose_media_type(accept: str) -> str | None:
    """Pick the response media type from an Accept header; None means 406."""
    if not accept.strip():
        return APPLICATION_JSON
    best, best_q = None, 0.0
    for item in accept.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = GRAPHQL_RESPONSE_JSON
        elif media in (APPLICATION_JSON, "application/*", "*/*"):
            candidate = APPLICATION_JSON
        else:
            continue
        # graphql-response+json wins ties: it carries more precise status codes.
        if q > best_q or (q == best_q and q > 0 and candidate == GRAPHQL_RESPONSE_JSON):
            best, best_q = candidate, q
    return best


def url_params(request: web.Request) -> dict[str, Any]:
    """A GET request's ``query``, ``operationName``, ``variables`` and ``extensions`` (JSON-decoded).

    ``query`` may be absent when ``extensions`` asks for a persisted query
    (:func:`operation_params` checks).
    """
    body: dict[str, Any] = {"query": request.query.get("query"), "operationName": request.query.get("operationName")}
    for name in ("variables", "extensions"):
        raw = request.query.get(name)
        if raw:
            try:
                body[name] = json.loads(raw)
            except ValueError:
                raise RequestError(f"'{name}' is not valid JSON") from None
            except RecursionError:
                raise RequestError(f"'{name}' is nested too deeply") from None
    return body


def dumps_bytes(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes; dates and datetimes as ISO strings."""
    try:
        return _orjson_dumps(value, default=_json_default)
    except orjson.JSONEncodeError:
        # What orjson refuses and the standard library writes: integers past
        # 64 bits, keys that are not strings, lone surrogates (escaped),
        # nesting past 255 levels. Its other errors repeat there.
        return _compact(value).encode()


def dumps(value: Any) -> str:
    """Compact JSON; dates and datetimes as ISO strings."""
    return dumps_bytes(value).decode()


def json_response(payload: Any, *, status: int = 200, media_type: str = APPLICATION_JSON, headers: Mapping[str, str] | None = None) -> web.Response:
    # A step's pre-encoded result (the response cache) is sent as it is.
    body = payload.encoded if type(payload) is EncodedResult else dumps_bytes(payload)
    # Content-Type among the headers: aiohttp's content_type and charset
    # arguments parse the header they build again.
    head = CIMultiDict(headers) if headers else CIMultiDict()
    head["Content-Type"] = _CONTENT_TYPES.get(media_type) or media_type + "; charset=utf-8"
    return web.Response(body=body, status=status, headers=head)


_CONTENT_TYPES = {APPLICATION_JSON: APPLICATION_JSON + "; charset=utf-8", GRAPHQL_RESPONSE_JSON: GRAPHQL_RESPONSE_JSON + "; charset=utf-8"}


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# orjson writes a response in a tenth of the standard library's time (the
# books fixture: 1.4 against 22 us) and parses a request body in one C call.
_orjson_dumps = orjson.dumps
# Built once: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def error_response(message: str, status: int, media_type: str = APPLICATION_JSON, headers: Mapping[str, str] | None = None, errors: list[dict] | None = None) -> web.Response:
    return json_response({"errors": errors or [{"message": message}]}, status=status, media_type=media_type, headers=headers)


def _check_csrf(request: web.Request, config: Any) -> None:
    if not config.csrf_prevention:
        return
    content_type = request.headers.get("Content-Type")
    if content_type is not None and content_type.split(";")[0].strip().lower() not in _SIMPLE_CONTENT_TYPES:
        return
    if any(request.headers.get(h) for h in _PREFLIGHT_HEADERS):
        return
    raise RequestError(CSRF_MESSAGE, 400)


def operation_params(body: Any) -> tuple[str | None, dict | None, str | None, dict | None]:
    """``(query, variables, operationName, extensions)`` from a request body; RequestError if malformed.

    ``query`` is None only when ``extensions`` asks for a persisted query
    (:meth:`~plugboard.graphql.operation.OperationRunner.load_persisted` finds it).
    """
    if type(body) is not dict:
        raise RequestError("the request body must be a JSON object with a 'query' string")
    query = body.get("query")
    if type(query) is not str:
        if query is not None:
            raise RequestError("'query' must be a string")
        if not persisted.requested(body.get("extensions")):  # a persisted query's hash may stand for it
            raise RequestError("'query' is missing: the request must carry a GraphQL document")
    elif len(body) == 1:  # the usual body: nothing else to check
        return query, None, None, None
    variables = body.get("variables")
    if variables is not None and type(variables) is not dict:
        raise RequestError("'variables' must be an object (or null)")
    operation_name = body.get("operationName")
    if operation_name is not None and type(operation_name) is not str:
        raise RequestError("'operationName' must be a string (or null)")
    extensions = body.get("extensions")
    if extensions is not None and type(extensions) is not dict:
        raise RequestError("'extensions' must be an object (or null)")
    return query, variables, operation_name, extensions


def _status_for(media_type: str, status: int, result: dict) -> int:
    # application/json keeps 200 for document errors (the spec's legacy
    # rule); HTTP-level rejections (401, 405, 413, 429 ...) keep their status.
    if media_type == APPLICATION_JSON and status == 400 and "errors" in result and "data" not in result:
        return 200
    return status


def check_body_size(request: web.Request, limit: int) -> None:
    """RequestError 413 when the declared body is larger than ``limit`` (aiohttp enforces the limit as it reads)."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(f"request body is larger than {limit} bytes", 413)


def parse_json_body(raw: bytes) -> Any:
    """A request body's JSON; RequestError 400 when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # orjson refuses nesting past 1024 levels with an error of its own,
        # well before the interpreter's recursion limit.
        if str(e).startswith("depth limit exceeded"):
            raise RequestError("the request body is nested too deeply") from None
        raise RequestError(f"the request body is not valid JSON: {e}") from None


async def read_json_body(request: web.Request, limit: int | None = None) -> Any:
    """The JSON body within ``limit`` (default ``graphql.max_body_size``); RequestError (400/413) otherwise."""
    if limit is None:
        limit = request.app[keys.CORE_CONFIG].graphql.max_body_size
    check_body_size(request, limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body is larger than {limit} bytes", 413) from None
    return parse_json_body(raw)


class GraphQLEndpoint:
    """The GraphQL path's handler: plugin transports first (WebSocket, SSE), then plain HTTP.

    One per app. What each request needs from the app (the runner, the
    context builder, the transports, the ``graphql`` config) is read on the
    first request, once start-up has put it in place: each of aiohttp's
    ``request.app[key]`` is a few Python calls. A single JSON operation, the
    usual request, executes under two coroutines of ours (this one and the
    operation's; the body is read before): every further level would be
    resumed at each of the execution's awaits.
    """

    def __init__(self) -> None:
        self._app: web.Application | None = None

    def _bind(self, app: web.Application) -> None:
        self.transports = app[keys.TRANSPORTS]
        self.config = app[keys.CORE_CONFIG].graphql
        self.runner = app[keys.RUNNER]
        self.contexts = app[keys.CONTEXT_BUILDER]
        self._app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._app is None:
            self._bind(request.app)
        method = request.method
        if self.transports:
            for transport in self.transports:
                if method in transport.methods and transport.matches(request):
                    return await transport.handle(request)
        if method == "POST":
            media_type = choose_media_type(request.headers.get("Accept", ""))
            if media_type is None:
                return _not_acceptable()
            try:
                if request_media_type(request) == "application/json":
                    body = await read_json_body(request, self.config.max_body_size)
                    if type(body) is list:
                        return await self._batch(request, body, media_type)
                    result, status, headers = await self._execute(request, body, ("query", "mutation"))
                    return json_response(result, status=_status_for(media_type, status, result), media_type=media_type, headers=headers)
                return await self._post_other(request, media_type)
            except RequestError as e:
                return error_response(e.message, e.status, media_type, e.headers)
        if method in ("GET", "HEAD"):
            return await self._get(request)
        allowed = {"GET", "POST"}
        for transport in self.transports:
            allowed.update(transport.methods)
        return error_response(f"method {method} is not allowed here", 405, headers={"Allow": ", ".join(sorted(allowed))})

    async def _execute(self, request: web.Request, body: Any, allowed: tuple[str, ...]) -> tuple[dict, int, Mapping[str, str]]:
        """Run one operation; returns ``(result, status for graphql-response+json, headers)``."""
        query, variables, operation_name, extensions = operation_params(body)
        runner = self.runner
        op = Operation(query=query, variables=variables, operation_name=operation_name, extensions=extensions, context=None, transport="http")
        try:
            if extensions:
                await runner.load_persisted(op)
            runner.prepare(op, allowed_types=allowed)
            context = self.contexts.start(self._app, request, request_id=request[REQUEST_ID], transport="http")
            op.context = context if type(context) is Context else await context
            result = await runner.run(op)
        except OperationRejected as e:
            headers = dict(e.headers)
            if e.status == 405:
                headers["Allow"] = "POST"
            return {"errors": e.errors}, e.status, headers
        except GraphQLError as e:  # from a context hook: authentication and the like
            return {"errors": [e.formatted()]}, e.http_status, e.headers
        # No ``data`` key: a request error (variables that do not coerce), 400
        # under graphql-response+json; the legacy media type keeps 200.
        return result, 200 if "data" in result else 400, op.response_headers

    async def _get(self, request: web.Request) -> web.StreamResponse:
        media_type = choose_media_type(request.headers.get("Accept", ""))
        query = request.query.get("query")
        if query is None and "extensions" not in request.query:  # (a persisted query's hash may stand for it)
            from plugboard.transports.graphiql import wants_graphiql, graphiql_page

            if wants_graphiql(request):
                return graphiql_page(request)
            return error_response("'query' is missing: send the document as the 'query' URL parameter", 400, media_type or APPLICATION_JSON)
        if media_type is None:
            return _not_acceptable()
        try:
            _check_csrf(request, self.config)
            body = url_params(request)
            result, status, headers = await self._execute(request, body, ("query",))
        except RequestError as e:
            return error_response(e.message, e.status, media_type, e.headers)
        return json_response(result, status=_status_for(media_type, status, result), media_type=media_type, headers=headers)

    async def _post_other(self, request: web.Request, media_type: str) -> web.StreamResponse:
        content_type = request_media_type(request)
        if content_type == "multipart/form-data" and self.config.uploads:
            _check_csrf(request, self.config)
            return await _multipart(request, media_type, self)
        raise RequestError(f"unsupported content type {content_type or '(none)'!r}; send application/json", 415)

    async def respond(self, request: web.Request, body: Any, media_type: str) -> web.Response:
        """Answer a parsed body: one operation, or a batch (a list)."""
        if type(body) is list:
            return await self._batch(request, body, media_type)
        result, status, headers = await self._execute(request, body, ("query", "mutation"))
        return json_response(result, status=_status_for(media_type, status, result), media_type=media_type, headers=headers)

    async def _batch(self, request: web.Request, body: list, media_type: str) -> web.Response:
        if not self.config.batching:
            raise RequestError("batched requests are disabled (graphql.batching: false)")
        if not body:
            raise RequestError("the batch is empty")
        if len(body) > self.config.max_batch_size:
            raise RequestError(f"the batch has {len(body)} operations; the limit is {self.config.max_batch_size}", 413)
        results = []
        for item in body:
            try:
                result, _status, _headers = await self._execute(request, item, ("query", "mutation"))
            except RequestError as e:
                result = {"errors": [{"message": e.message}]}
            results.append(result)
        return json_response(results, media_type=media_type)


def _rules_by_file(app: web.Application, operations: Any) -> Any:
    """:func:`upload_rules.rules_by_file`, for operations that carry their document.

    The fields each file reaches, and so the plugins' rules for it, are read
    from the document before a byte of the file is: a persisted query's hash
    cannot stand for the document of a request with files.
    """
    for op in operations if isinstance(operations, list) else (operations,):
        if isinstance(op, dict) and op.get("query") is None and persisted.requested(op.get("extensions")):
            raise MultipartError(400, "a request with files must carry its document: a persisted query's hash cannot stand for it")
    return upload_rules.rules_by_file(app, operations)


def _not_acceptable() -> web.Response:
    return error_response("acceptable media types: application/graphql-response+json, application/json", 406)


async def _multipart(request: web.Request, media_type: str, endpoint: GraphQLEndpoint) -> web.Response:
    cfg = request.app[keys.CORE_CONFIG]
    try:
        upload = await read_multipart(
            request,
            max_file_size=cfg.graphql.max_file_size,
            max_files=cfg.graphql.max_files,
            max_operations_size=cfg.graphql.max_body_size,
            spool_threshold=cfg.graphql.upload_spool_size,
            rules_for=partial(_rules_by_file, request.app),
        )
    except MultipartError as e:
        # Answered before the rest of the body is read, with Connection: close:
        # aiohttp reads and drops what the client still sends (for at most its
        # lingering time) before closing, so the client gets this response
        # rather than a reset, and the connection is not reused mid-body.
        errors = [{"message": e.message, "extensions": {"code": e.code}}]
        response = error_response(e.message, e.status, media_type, errors=errors)
        response.force_close()
        return response
    try:
        return await endpoint.respond(request, upload.operations, media_type)
    finally:
        await upload.close()
