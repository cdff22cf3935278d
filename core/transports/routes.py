"""The core's own routes: the GraphQL path, health probes, local file downloads, GraphiQL assets, inspect."""

from __future__ import annotations

from aiohttp import web

from plugboard.core_config import CoreConfig
from plugboard.transports import files, graphiql, health, http, inspect


def core_routes(core: CoreConfig) -> list[web.AbstractRouteDef]:
    routes = [
        web.route("*", core.graphql.path, http.GraphQLEndpoint().handle),
        web.get("/healthz", health.healthz),
        web.get("/readyz", health.readyz),
        web.get(core.server.files_path.rstrip("/") + "/{key:.+}", files.download),
    ]
    if core.graphql.graphiql:
        routes += graphiql.asset_routes()
    if core.server.inspect:
        routes.append(web.get(core.server.inspect_path, inspect.inspect_endpoint))
    return routes
