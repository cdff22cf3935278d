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
from functools import partial
from typing import Any, Mapping

from aiohttp import web

from plugboard import keys
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
    """A GET request's ``query``, ``operationName``, ``variables`` and ``extensions`` (JSON-decoded)."""
    query = request.query.get("query")
    if query is None:
        raise RequestError("'query' is missing: send the document as the 'query' URL parameter")
    body: dict[str, Any] = {"query": query, "operationName": request.query.get("operationName")}
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
    """Compact JSON as bytes; dates and datetimes as ISO strings."""
    return _compact(value).encode()


def dumps(value: Any) -> str:
    """Compact JSON; dates and datetimes as ISO strings."""
    return _compact(value)


def json_response(payload: Any, *, status: int = 200, media_type: str = APPLICATION_JSON, headers: Mapping[str, str] | None = None) -> web.Response:
    # A step's pre-encoded result (the response cache) is sent as it is.
    body = payload.encoded if isinstance(payload, EncodedResult) else dumps_bytes(payload)
    return web.Response(
        body=body,
        status=status,
        headers=headers,
        content_type=media_type,
        charset="utf-8",
    )


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Built once: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def error_response(message: str, status: int, media_type: str = APPLICATION_JSON, headers: Mapping[str, str] | None = None, errors: list[dict] | None = None) -> web.Response:
    return json_response({"errors": errors or [{"message": message}]}, status=status, media_type=media_type, headers=headers)


def _check_csrf(request: web.Request) -> None:
    if not request.app[keys.CORE_CONFIG].graphql.csrf_prevention:
        return
    content_type = request.headers.get("Content-Type")
    if content_type is not None and content_type.split(";")[0].strip().lower() not in _SIMPLE_CONTENT_TYPES:
        return
    if any(request.headers.get(h) for h in _PREFLIGHT_HEADERS):
        return
    raise RequestError(CSRF_MESSAGE, 400)


def operation_params(body: Any) -> tuple[str, dict | None, str | None, dict | None]:
    """``(query, variables, operationName, extensions)`` from a request body; RequestError if malformed."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with a 'query' string")
    query = body.get("query")
    if query is None:
        raise RequestError("'query' is missing: the request must carry a GraphQL document")
    if not isinstance(query, str):
        raise RequestError("'query' must be a string")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError("'variables' must be an object (or null)")
    operation_name = body.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError("'operationName' must be a string (or null)")
    extensions = body.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError("'extensions' must be an object (or null)")
    return query, variables, operation_name, extensions


async def execute_one(request: web.Request, body: Any, *, transport: str, allowed: tuple[str, ...]) -> tuple[dict, int, Mapping[str, str]]:
    """Run one operation; returns ``(result, status for graphql-response+json, headers)``."""
    app = request.app
    query, variables, operation_name, extensions = operation_params(body)
    runner = app[keys.RUNNER]
    op = Operation(query=query, variables=variables, operation_name=operation_name, extensions=extensions, context=None, transport=transport)
    try:
        runner.prepare(op, allowed_types=allowed)
        op.context = await app[keys.CONTEXT_BUILDER].build(app, request, request_id=request[REQUEST_ID], transport=transport)
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


def _status_for(media_type: str, status: int, result: dict) -> int:
    # application/json keeps 200 for document errors (the spec's legacy
    # rule); HTTP-level rejections (401, 405, 413, 429 ...) keep their status.
    if media_type == APPLICATION_JSON and status == 400 and "errors" in result and "data" not in result:
        return 200
    return status


async def graphql_endpoint(request: web.Request) -> web.StreamResponse:
    """The GraphQL path: plugin transports first (WebSocket, SSE), then plain HTTP."""
    for transport in request.app[keys.TRANSPORTS]:
        if request.method in transport.methods and transport.matches(request):
            return await transport.handle(request)
    if request.method == "POST":
        return await graphql_post(request)
    if request.method in ("GET", "HEAD"):
        return await graphql_get(request)
    allowed = {"GET", "POST"}
    for transport in request.app[keys.TRANSPORTS]:
        allowed.update(transport.methods)
    return error_response(f"method {request.method} is not allowed here", 405, headers={"Allow": ", ".join(sorted(allowed))})


async def graphql_get(request: web.Request) -> web.StreamResponse:
    media_type = choose_media_type(request.headers.get("Accept", ""))
    query = request.query.get("query")
    if query is None:
        from plugboard.transports.graphiql import wants_graphiql, graphiql_page

        if wants_graphiql(request):
            return graphiql_page(request)
        return error_response("'query' is missing: send the document as the 'query' URL parameter", 400, media_type or APPLICATION_JSON)
    if media_type is None:
        return error_response("acceptable media types: application/graphql-response+json, application/json", 406)
    try:
        _check_csrf(request)
        body = url_params(request)
        result, status, headers = await execute_one(request, body, transport="http", allowed=("query",))
    except RequestError as e:
        return error_response(e.message, e.status, media_type, e.headers)
    return json_response(result, status=_status_for(media_type, status, result), media_type=media_type, headers=headers)


async def graphql_post(request: web.Request) -> web.StreamResponse:
    media_type = choose_media_type(request.headers.get("Accept", ""))
    if media_type is None:
        return error_response("acceptable media types: application/graphql-response+json, application/json", 406)
    content_type = request_media_type(request)
    try:
        if content_type == "application/json":
            body = await read_json_body(request)
            return await _respond(request, body, media_type)
        if content_type == "multipart/form-data" and request.app[keys.CORE_CONFIG].graphql.uploads:
            _check_csrf(request)
            return await _multipart(request, media_type)
        raise RequestError(f"unsupported content type {content_type or '(none)'!r}; send application/json", 415)
    except RequestError as e:
        return error_response(e.message, e.status, media_type, e.headers)


async def read_json_body(request: web.Request) -> Any:
    """The JSON body within ``graphql.max_body_size``; RequestError (400/413) otherwise."""
    limit = request.app[keys.CORE_CONFIG].graphql.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(f"request body is larger than {limit} bytes", 413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body is larger than {limit} bytes", 413) from None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        # json's decoder recurses per nesting level: 50,000 '[' must be the
        # client's error, not a 500 with a long traceback.
        raise RequestError("the request body is nested too deeply") from None


async def _respond(request: web.Request, body: Any, media_type: str) -> web.Response:
    if isinstance(body, list):
        cfg = request.app[keys.CORE_CONFIG].graphql
        if not cfg.batching:
            raise RequestError("batched requests are disabled (graphql.batching: false)")
        if not body:
            raise RequestError("the batch is empty")
        if len(body) > cfg.max_batch_size:
            raise RequestError(f"the batch has {len(body)} operations; the limit is {cfg.max_batch_size}", 413)
        results = []
        for item in body:
            try:
                result, _status, _headers = await execute_one(request, item, transport="http", allowed=("query", "mutation"))
            except RequestError as e:
                result = {"errors": [{"message": e.message}]}
            results.append(result)
        return json_response(results, media_type=media_type)
    result, status, headers = await execute_one(request, body, transport="http", allowed=("query", "mutation"))
    return json_response(result, status=_status_for(media_type, status, result), media_type=media_type, headers=headers)


async def _multipart(request: web.Request, media_type: str) -> web.Response:
    cfg = request.app[keys.CORE_CONFIG]
    try:
        upload = await read_multipart(
            request,
            max_file_size=cfg.graphql.max_file_size,
            max_files=cfg.graphql.max_files,
            max_operations_size=cfg.graphql.max_body_size,
            spool_threshold=cfg.graphql.upload_spool_size,
            rules_for=partial(upload_rules.rules_by_file, request.app) if request.app[keys.UPLOAD_RULES] else None,
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
        return await _respond(request, upload.operations, media_type)
    finally:
        await upload.close()
