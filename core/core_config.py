"""The core's own settings sections: ``server``, ``graphql``, ``records``, ``redis``.

Plugins bring their sections through ``plugboard_config_class``; these four
belong to the runtime itself and are validated the same way, with the same
error messages.
"""

from __future__ import annotations

from typing import Literal

import attrs

from plugboard.cors import CorsConfig
from plugboard.graphql.limits import LimitsConfig
from plugboard.providers.records import RecordsConfig
from plugboard.providers.redis import RedisConfig
from plugboard.units import Duration, Secret, Size
from plugboard import validators


@attrs.define(frozen=True, kw_only=True)
class ServerConfig:
    """``server:`` — where and how the HTTP server runs."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=validators.port)
    #: Show resolver exception messages to clients (never in production).
    debug: bool = False
    #: Where embedded providers keep their files (SQLite, local uploads, outbox).
    data_dir: str = "var"
    #: How long in-flight requests may run after SIGTERM before they are cut.
    shutdown_grace: Duration = attrs.field(default=10.0, validator=validators.positive)
    workers: int = attrs.field(default=1, validator=validators.positive)
    #: Bearer token for operator endpoints (the inspect endpoint).
    admin_token: Secret | None = None
    #: Operator endpoint listing plugins, hooks and the fields each owns.
    inspect: bool = False
    inspect_path: str = attrs.field(default="/_plugboard", validator=validators.url_path)
    access_log: bool = False
    #: Believe X-Forwarded-Proto/-For (the last value) from the reverse proxy in front; only behind one.
    trust_proxy_headers: bool = False
    #: Signs download URLs of locally stored files. Unset: a random key is made
    #: once and kept in ``<data_dir>/secret_key`` (mode 0600).
    secret_key: Secret | None = None
    #: Where locally stored files are downloaded from (signed, expiring URLs).
    files_path: str = attrs.field(default="/files", validator=validators.url_path)
    #: Cross-origin browser access and WebSocket origins (see plugboard.cors).
    cors: CorsConfig = CorsConfig()


@attrs.define(frozen=True, kw_only=True)
class GraphQLConfig:
    """``graphql:`` — the GraphQL endpoint and its limits."""

    path: str = attrs.field(default="/graphql", validator=validators.url_path)
    graphiql: bool = True
    introspection: bool = True
    max_body_size: Size = attrs.field(default=1024 * 1024, validator=validators.positive)
    batching: bool = False
    max_batch_size: int = attrs.field(default=10, validator=validators.positive)
    #: Apollo-style CSRF prevention for GET and multipart requests.
    csrf_prevention: bool = True
    #: Multipart uploads (GraphQL multipart request spec).
    uploads: bool = True
    max_file_size: Size = attrs.field(default=10 * 1024 * 1024, validator=validators.positive)
    max_files: int = attrs.field(default=10, validator=validators.positive)
    #: Files larger than this spill from memory to a temporary file.
    upload_spool_size: Size = attrs.field(default=1024 * 1024, validator=validators.positive)
    #: Parsed-and-validated documents kept in the LRU cache.
    document_cache_size: int = attrs.field(default=512, validator=validators.positive)
    #: ... and their estimated memory (text and parsed form); documents that
    #: fail to parse or validate are never kept.
    document_cache_bytes: Size = attrs.field(default=64 * 1024 * 1024, validator=validators.positive)
    #: Structural limits checked before a document is parsed (graphql/limits.py).
    limits: LimitsConfig = LimitsConfig()
    #: Tartiflette resolves list items concurrently by default; sequential
    #: is much faster for lists of cheap items (the common case).
    coerce_list_concurrently: bool = False
    #: Likewise for the fields of one object. Turn on when sibling fields do
    #: slow independent I/O that should overlap.
    coerce_parent_concurrently: bool = False
    #: ``planned`` runs each document by an execution plan made once and kept
    #: with it (Tartiflette's semantics, much less work per field), falling
    #: back to Tartiflette's executor for what plans do not cover (custom
    #: directives with execution hooks, introspection); ``tartiflette`` always
    #: uses Tartiflette's executor.
    executor: Literal["planned", "tartiflette"] = "planned"
    #: Subscribers with the same operation, variables and identity share one
    #: source stream and one execution per event (see graphql/shared_streams.py).
    share_subscriptions: bool = True
    #: Results buffered per subscriber of a shared stream before the oldest drop.
    subscription_buffer: int = attrs.field(default=256, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class CoreConfig:
    """Every core section, validated."""

    server: ServerConfig = ServerConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    records: RecordsConfig = RecordsConfig()
    redis: RedisConfig = RedisConfig()


CORE_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "graphql": GraphQLConfig,
    "records": RecordsConfig,
    "redis": RedisConfig,
}
