"""``@rateLimit(max, window, per)``: refusals over HTTP (429 + headers) and WebSocket (an error), counters per IP/USER/KEY, and bad uses stopping start-up with the SDL file and line."""

from __future__ import annotations

import time

import jwt
import pytest

from plugboard import hookimpl
from plugboard.errors import SchemaError
from plugboard.graphql.sdl import Fragment, directive_uses

GQL = {"Accept": "application/graphql-response+json"}
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"

SDL = '''extend type Query {
  ping: String @rateLimit(max: 2, window: "1m", per: IP)
  mine: String @rateLimit(max: 1, window: "30s")
  free: String
}
'''


class Limited:
    def __init__(self, path):
        self.path = path

    @hookimpl
    def plugboard_schema(self):
        return self.path

    @hookimpl
    def plugboard_resolvers(self):
        async def value(parent, args, ctx, info):
            return "ok"

        return {"Query.ping": value, "Query.mine": value, "Query.free": value}


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + 300}, SECRET, algorithm="HS256")


@pytest.fixture
def limited(tmp_path):
    path = tmp_path / "limited.graphql"
    path.write_text(SDL)
    return Limited(path)


def settings(**extra):
    return {
        "plugins": ["realtime", "protection"],
        "protection": {"requests": {"max": 1000, "window_ms": 60000}, "jwt": {"enabled": True, "secret": SECRET}, **extra},
    }


async def test_a_limited_field_refuses_the_operation_with_429_and_headers(plugboard_client, limited):
    client = await plugboard_client(settings(), plugins=[limited])
    for remaining in (1, 0):
        async with client.post("/graphql", json={"query": "{ ping free }"}, headers=GQL) as resp:
            assert resp.status == 200
            assert '"Query.ping";q=2;w=60' in resp.headers["RateLimit-Policy"] and '"ip";q=1000;w=60' in resp.headers["RateLimit-Policy"]
            assert f'"Query.ping";r={remaining};' in resp.headers["RateLimit"]
    async with client.post("/graphql", json={"query": "{ ping free }"}, headers=GQL) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert '"Query.ping";r=0;' in resp.headers["RateLimit"]
        error = (await resp.json())["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["field"] == "Query.ping" and error["extensions"]["policy"] == "Query.ping"
    # Fields without a limit are untouched.
    assert (await client.gql_data("{ free }")) == {"free": "ok"}


async def test_aliases_are_selections_too(plugboard_client, limited):
    client = await plugboard_client(settings(), plugins=[limited])
    result = await client.gql("{ a: ping b: ping c: ping }", headers=GQL, status=429)
    assert result["errors"][0]["extensions"]["field"] == "Query.ping"


async def test_per_user_counts_each_user_and_anonymous_by_address(plugboard_client, limited):
    client = await plugboard_client(settings(), plugins=[limited])
    for who in ("alice", "bob"):
        headers = {"Authorization": f"Bearer {token(who)}"}
        assert (await client.gql_data("{ mine }", headers=headers)) == {"mine": "ok"}
        await client.gql("{ mine }", headers={**headers, **GQL}, status=429)
    await client.gql_data("{ mine }")
    await client.gql("{ mine }", headers=GQL, status=429)


async def test_over_websocket_the_operation_gets_an_error(plugboard_client, limited):
    client = await plugboard_client(settings(), plugins=[limited])
    ws = await client.ws()
    try:
        for _ in range(2):
            assert (await ws.execute("{ ping }"))[0]["data"] == {"ping": "ok"}
        await ws.subscribe("9", "{ ping }")
        messages = await ws.until_complete("9")
        assert messages[-1]["type"] == "error"
        assert messages[-1]["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
        # The socket stays open for other operations.
        assert (await ws.execute("{ free }", op_id="10"))[0]["data"] == {"free": "ok"}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "use, message",
    [
        ('@rateLimit(max: 0, window: "1m")', "max must be a whole number > 0, not 0"),
        ('@rateLimit(max: 5, window: "soon")', "window must be a duration such as \"30s\", \"1m\" or \"1h\", not 'soon'"),
        ('@rateLimit(max: 5, window: "1m", per: PLANET)', "per must be one of IP, USER, KEY, not PLANET"),
        ('@rateLimit(max: 5, window: "1m", burst: 3)', "unknown argument 'burst'"),
    ],
)
def test_a_bad_use_stops_start_up_naming_file_and_line(plugboard_app, tmp_path, use, message):
    path = tmp_path / "bad.graphql"
    path.write_text(f"extend type Query {{\n  free: String\n  ping: String {use}\n  mine: String\n}}\n")
    with pytest.raises(SchemaError) as info:
        plugboard_app({"plugins": ["protection"]}, plugins=[Limited(path)])
    assert f"{path}:3: @rateLimit on field Query.ping: {message}" in str(info.value)


def test_a_limit_on_a_type_is_refused():
    fragment = Fragment("x", "plugin 'x'", 'type Thing @rateLimit(max: 1, window: "1s") { a: Int }')
    from plugboard.plugins.protection.directive import read_rate_limits

    with pytest.raises(SchemaError, match=r"plugin 'x', SDL line 1: @rateLimit on type Thing: only fields can be limited"):
        read_rate_limits([fragment])


def test_directive_uses_gives_each_use_with_its_place():
    fragments = [
        Fragment("a", "a.graphql", "type A @cost(weight: 2) {\n  x: Int\n  y: [A] @cost(weight: 1, multipliers: [\"n\"])\n}\n"),
        Fragment("b", "plugin 'b'", "extend type Query {\n\n  z: Int @cost(weight: 3)\n}\n"),
        Fragment("c", "c.graphql", "type C { w: Int }"),  # no use: not parsed
        Fragment("d", "d.graphql", "type D { @cost broken"),  # does not parse: the engine reports it
    ]
    uses = directive_uses(fragments, "cost")
    assert [(u.coordinate, u.where, sorted(u.arguments)) for u in uses] == [
        ("A", "a.graphql:1", ["weight"]),
        ("A.y", "a.graphql:3", ["multipliers", "weight"]),
        ("Query.z", "plugin 'b', SDL line 3", ["weight"]),
    ]
    assert uses[0].what == "type A" and uses[1].what == "field A.y"
