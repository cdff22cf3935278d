"""Automatic persisted queries: a document sent once, then by its SHA-256 (Apollo's APQ protocol).

A client sends ``extensions: {"persistedQuery": {"version": 1, "sha256Hash":
"<hex>"}}`` without ``query``; if the server has the document it runs it,
otherwise it answers ``PERSISTED_QUERY_NOT_FOUND`` and the client sends the
request again with both the document and the hash, which the server checks
and keeps. Hash-only requests fit in a GET URL, which CDNs cache.

The protocol is the core's, the same on every transport; where documents are
kept is a plugin's (:class:`PersistedQueryStore`, from the
``plugboard_persisted_queries`` hook). Without one, every request carrying
``persistedQuery`` is answered ``PERSISTED_QUERY_NOT_SUPPORTED``, which
tells Apollo Client's PersistedQueryLink to send full documents from then on.
Both answers are HTTP 200 with ``Cache-Control: private, no-cache,
must-revalidate``, as Apollo Server sends them, so no cache in between keeps
them.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from plugboard.errors import ProviderError
from plugboard.graphql.errors import GraphQLError

if TYPE_CHECKING:
    from plugboard.graphql.operation import Operation

logger = logging.getLogger("plugboard.graphql")

EXTENSION = "persistedQuery"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NO_STORE = {"Cache-Control": "private, no-cache, must-revalidate"}


@runtime_checkable
class PersistedQueryStore(Protocol):
    """Where persisted documents are kept, by the lowercase hex SHA-256 of their text.

    The implementer's manual:

    - :meth:`load` returns the document saved under ``sha256``, or None when
      there is none (never saved, expired, evicted). A backend outage raises
      :class:`plugboard.errors.ProviderError`: the client is then asked for the
      document, as for an unknown hash.
    - :meth:`save` keeps ``document`` under ``sha256``. The core has checked
      the hash and validated the document against the schema first. It may
      forget documents (a TTL, an LRU); clients send them again when asked.
      An outage raises ProviderError: the operation still runs.

    Instances sharing a backend (Redis) share their documents: a document
    sent to one instance is found by the others.
    """

    async def load(self, sha256: str) -> str | None: ...

    async def save(self, sha256: str, document: str) -> None: ...


def requested(extensions: Any) -> bool:
    """Whether a request's ``extensions`` ask for a persisted query (so ``query`` may be absent)."""
    return type(extensions) is dict and extensions.get(EXTENSION) is not None


def _rejected(message: str, code: str, status: int) -> Exception:
    from plugboard.graphql.operation import OperationRejected

    error = GraphQLError(message, code).formatted()
    # The 200s are answers about the document, not a malformed request:
    # graphql-sse reports them as the stream's result, as it does a document
    # that does not validate.
    return OperationRejected(message, status, errors=[error], headers=_NO_STORE, invalid_document=status == 200)


def _requested_hash(extensions: dict[str, Any]) -> str:
    persisted = extensions[EXTENSION]
    if type(persisted) is not dict:
        raise _rejected("extensions.persistedQuery must be an object with 'version' and 'sha256Hash'", "BAD_REQUEST", 400)
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise _rejected("Unsupported persisted query version: send version 1", "BAD_REQUEST", 400)
    sha256 = persisted.get("sha256Hash")
    if type(sha256) is not str or not _SHA256_HEX.fullmatch(sha256):
        raise _rejected("extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits", "BAD_REQUEST", 400)
    return sha256.lower()


async def load(store: PersistedQueryStore | None, op: "Operation", parse: Any) -> None:
    """Put the persisted document in ``op.query``, or check and save the one sent with its hash.

    ``parse`` is the engine's cached parse: a document is saved only once it
    parses and validates, so a hash never stands for a broken document.
    Raises OperationRejected with the protocol's errors.
    """
    if store is None:
        raise _rejected("PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED", 200)
    sha256 = _requested_hash(op.extensions)  # type: ignore[arg-type]
    if op.query is None:
        try:
            op.query = await store.load(sha256)
        except ProviderError as e:
            # Debug: a store reports its own outage, once, not per request.
            logger.debug("persisted queries: the store did not answer (%s); asking the client for the document", e)
        if op.query is None:
            raise _rejected("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND", 200)
        return
    if hashlib.sha256(op.query.encode()).hexdigest() != sha256:
        raise _rejected("provided sha does not match query", "BAD_REQUEST", 400)
    if parse(op.query).errors:
        return  # the operation's own validation errors answer it
    try:
        await store.save(sha256, op.query)
    except ProviderError as e:
        logger.debug("persisted queries: could not save a document (%s); it runs anyway", e)
