"""Schema composition, resolver registration and per-app isolation."""

from __future__ import annotations


import pytest
from tartiflette.schema.registry import SchemaRegistry

from core_testkit import echo_plugin, make_plugin
from plugboard import keys
from plugboard.errors import SchemaError


async def _resolver(parent, args, context, info):
    return "x"


def field_plugin(name: str, sdl: str, resolvers: dict | None = None):
    hooks = {"plugboard_schema": lambda: sdl}
    if resolvers is not None:
        hooks["plugboard_resolvers"] = lambda: resolvers
    return make_plugin(name, **hooks)


def test_two_plugins_declaring_the_same_field_fail_naming_both(make_app):
    a = field_plugin("alpha", "extend type Query { shared: String }")
    b = field_plugin("beta", "extend type Query { shared: String }")
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a, b])
    assert "Query.shared" in str(e.value)
    assert "plugin 'alpha'" in str(e.value) and "plugin 'beta'" in str(e.value)


def test_two_plugins_resolving_the_same_field_fail_naming_both(make_app):
    a = field_plugin("alpha", "extend type Query { one: String }", {"Query.one": _resolver})
    b = field_plugin("beta", "extend type Query { two: String }", {"Query.one": _resolver})
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a, b])
    assert "resolver 'Query.one' is contributed by both plugin 'alpha' and plugin 'beta'" in str(e.value)


def test_resolver_for_undeclared_field_fails_naming_plugin(make_app):
    a = field_plugin("alpha", "extend type Query { one: String }", {"Query.missing": _resolver})
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a])
    assert "plugin 'alpha': resolver 'Query.missing' names no field of the composed schema" in str(e.value)


def test_sync_resolver_is_rejected(make_app):
    a = field_plugin("alpha", "extend type Query { one: String }", {"Query.one": lambda *a: "x"})
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a])
    assert "plugin 'alpha': resolver 'Query.one' is not an async def function" in str(e.value)


def test_sdl_syntax_error_names_the_plugin(make_app):
    a = field_plugin("alpha", "extend type Query { one: String ")
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a])
    assert "plugin 'alpha'" in str(e.value) and "does not parse" in str(e.value)


def test_broken_graphql_file_names_the_plugin_file_and_line(make_app, tmp_path):
    schema = tmp_path / "alpha.graphql"
    schema.write_text('extend type Query {\n  one: String\n  two: \n}\n')
    a = make_plugin("alpha", plugboard_schema=lambda: schema)
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a])
    assert f"plugin 'alpha': {schema}:4: SDL does not parse" in str(e.value)


def test_duplicate_field_in_a_graphql_file_names_file_and_line(make_app, tmp_path):
    schema = tmp_path / "beta.graphql"
    schema.write_text("extend type Query {\n  shared: String\n}\n")
    a = field_plugin("alpha", "extend type Query { shared: String }")
    b = make_plugin("beta", plugboard_schema=lambda: [schema])
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[a, b])
    assert f"plugin 'beta' ({schema}:2)" in str(e.value)


async def test_schema_that_does_not_build_names_the_file_and_line_of_the_field(make_app, tmp_path, aiohttp_client):
    schema = tmp_path / "alpha.graphql"
    schema.write_text("extend type Query {\n  one: String\n  two: Nope\n}\n")
    app = make_app(plugins=[make_plugin("alpha", plugboard_schema=lambda: schema)])
    with pytest.raises(SchemaError) as e:
        await aiohttp_client(app)
    assert "does not build" in str(e.value)
    assert f"Query.two is declared by plugin 'alpha' ({schema}:3)" in str(e.value)


def test_builtin_plugins_ship_their_sdl_as_graphql_files():
    from pathlib import Path

    from plugboard.plugins import jobs, realtime
    from plugboard.plugins.realtime import chat, notifications, presence

    files = [jobs.plugboard_schema(config=None), *(m.SCHEMA for m in (presence, chat, notifications))]
    assert all(isinstance(f, Path) and f.suffix == ".graphql" and f.is_file() for f in files)
    assert Path(realtime.__file__).parent == presence.SCHEMA.parent


def test_schema_d_fragments_are_composed(make_app, tmp_path, aiohttp_client):
    (tmp_path / "schema.d").mkdir()
    (tmp_path / "schema.d" / "extra.graphql").write_text("extend type Query { motd: String }\n")
    app = make_app(plugins=[])
    composed = app[keys.COMPOSED_SCHEMA]
    owner, where = composed.field_owners["Query.motd"]
    assert owner == "schema.d" and where.endswith("extra.graphql:1")


def test_schema_d_duplicate_names_the_file(make_app, tmp_path):
    (tmp_path / "schema.d").mkdir()
    (tmp_path / "schema.d" / "extra.graphql").write_text("extend type Query {\n  hello: String\n}\n")
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[echo_plugin()])
    assert "extra.graphql:2" in str(e.value) and "plugin 'echo'" in str(e.value)


async def test_two_apps_in_one_process_do_not_share_resolvers(make_app, aiohttp_client):
    async def one(parent, args, context, info):
        return "from app one"

    async def two(parent, args, context, info):
        return "from app two"

    app1 = make_app(plugins=[field_plugin("p", "extend type Query { who: String }", {"Query.who": one})])
    app2 = make_app(plugins=[field_plugin("p", "extend type Query { who: String }", {"Query.who": two})])
    c1 = await aiohttp_client(app1)
    c2 = await aiohttp_client(app2)
    assert app1[keys.ENGINE].schema_name != app2[keys.ENGINE].schema_name
    for client, expected in ((c1, "from app one"), (c2, "from app two"), (c1, "from app one")):
        resp = await client.post("/graphql", json={"query": "{ who }"})
        assert (await resp.json())["data"]["who"] == expected


async def test_registry_entry_dropped_on_shutdown(make_app, aiohttp_client):
    app = make_app(plugins=[echo_plugin()])
    client = await aiohttp_client(app)
    name = app[keys.ENGINE].schema_name
    assert name in SchemaRegistry._schemas
    await client.close()
    assert name not in SchemaRegistry._schemas


async def test_mutation_root_only_when_extended(make_app, aiohttp_client):
    client = await aiohttp_client(make_app(plugins=[]))
    resp = await client.post("/graphql", json={"query": "{ __schema { mutationType { name } queryType { name } } }"})
    assert (await resp.json())["data"]["__schema"] == {"mutationType": None, "queryType": {"name": "Query"}}


async def test_subscriptions_must_be_async_generators_on_subscription(make_app):
    async def not_gen(parent, args, context, info):
        return 1

    plugin = make_plugin(
        "ticks",
        plugboard_schema=lambda: "extend type Subscription { tick: Int }",
        plugboard_subscriptions=lambda: {"Subscription.tick": not_gen},
    )
    with pytest.raises(SchemaError) as e:
        make_app(plugins=[plugin])
    assert "is not an async generator function" in str(e.value)


def test_field_ownership_recorded_per_plugin(make_app):
    app = make_app(plugins=[echo_plugin()])
    fields = app[keys.CONTRIBUTIONS]["echo"]["fields"]
    assert "Query.hello" in fields and "Mutation.upload" in fields and "EchoFile.size" in fields
    assert "Query.plugboardVersion" not in fields
