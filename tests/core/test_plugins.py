"""Plugin discovery, the hook contract, ordering and lifecycle."""

from __future__ import annotations

import inspect
import sys
import textwrap

import pytest
from aiohttp import web

from core_testkit import make_plugin
from plugboard import hookspecs, keys
from plugboard.errors import PluginLoadError
from plugboard.pluginmanager import HOOK_PREFIX, PluginManager


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throwaway plugin modules."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("pbtest_")]:
        del sys.modules[name]


def write_module(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_dotted_path_plugin_loads(make_app, module_dir):
    write_module(
        module_dir,
        "pbtest_hello",
        """
        from plugboard import hookimpl
        @hookimpl
        def plugboard_schema():
            return "extend type Query { dotted: String }"
        """,
    )
    app = make_app({"plugins": ["pbtest_hello"]})
    assert "pbtest_hello" in app[keys.PLUGIN_MANAGER].loaded
    assert "Query.dotted" in app[keys.COMPOSED_SCHEMA].field_owners


def test_unknown_plugin_lists_installed(make_app):
    with pytest.raises(PluginLoadError) as e:
        make_app({"plugins": ["no_such_plugin_xyz"]})
    msg = str(e.value)
    assert "unknown plugin 'no_such_plugin_xyz'" in msg and "installed:" in msg and "books" in msg


def test_plugin_that_fails_to_import(make_app, module_dir):
    write_module(module_dir, "pbtest_broken", "import no_such_dependency_abc\n")
    with pytest.raises(PluginLoadError) as e:
        make_app({"plugins": ["pbtest_broken"]})
    assert "plugin 'pbtest_broken': error importing it" in str(e.value)
    assert "no_such_dependency_abc" in str(e.value)


def test_plugin_raising_at_import(make_app, module_dir):
    write_module(module_dir, "pbtest_raises", "raise RuntimeError('kaboom')\n")
    with pytest.raises(PluginLoadError) as e:
        make_app({"plugins": ["pbtest_raises"]})
    assert "RuntimeError: kaboom" in str(e.value)


def test_disabled_plugin_is_not_loaded(make_app):
    app = make_app({"plugins": [{"name": "books", "enabled": False}]})
    assert "books" not in app[keys.PLUGIN_MANAGER].loaded
    assert "Query.books" not in app[keys.COMPOSED_SCHEMA].field_owners


def test_entry_point_plugin_enabled_by_settings(make_app):
    app = make_app({"plugins": ["books"]})
    loaded = app[keys.PLUGIN_MANAGER].loaded["books"]
    assert loaded.origin.startswith("entry point plugboard-books")
    assert loaded.version == "0.1.0"


def test_installed_but_undeclared_plugin_is_not_loaded(make_app):
    app = make_app({"plugins": []})
    assert "books" not in app[keys.PLUGIN_MANAGER].loaded


def test_missing_required_plugin(make_app):
    plugin = make_plugin("needy", plugboard_requires=lambda: ["books"])
    with pytest.raises(PluginLoadError) as e:
        make_app(plugins=[plugin])
    assert "plugin 'needy' requires plugin 'books', which is not enabled" in str(e.value)


def test_misspelled_hook_fails_start_up(make_app):
    plugin = make_plugin("typo", plugboard_shema=lambda: "extend type Query { x: String }")
    with pytest.raises(PluginLoadError) as e:
        make_app(plugins=[plugin])
    assert "plugboard_shema" in str(e.value)


def test_unmarked_prefixed_function_is_still_a_hook():
    class Plugin:
        def plugboard_schema(self):
            return "extend type Query { x: String }"

    pm = PluginManager()
    pm.register(Plugin(), name="p")
    assert [impl.plugin_name for impl in pm.hook.plugboard_schema.get_hookimpls()] == ["p"]


async def test_hooks_run_in_declared_order(make_app, aiohttp_client):
    calls = []

    def tracker(name):
        @web.middleware
        async def mw(request, handler):
            calls.append(name)
            return await handler(request)

        async def lifespan(app):
            calls.append(f"start {name}")
            yield
            calls.append(f"stop {name}")

        return make_plugin(name, plugboard_middleware=lambda: [mw], plugboard_lifespan=lifespan)

    client = await aiohttp_client(make_app(plugins=[tracker("first"), tracker("second")]))
    await client.get("/healthz")
    await client.close()
    assert calls == ["start first", "start second", "first", "second", "stop second", "stop first"]


async def test_operation_steps_wrap_in_declared_order(make_app, aiohttp_client):
    from core_testkit import echo_plugin

    seen = []

    def stepper(name, short_circuit=False):
        async def step(operation, call_next):
            seen.append(f"{name}:{operation.operation_type}:{operation.transport}")
            if short_circuit and "boom" in operation.query:
                return operation.error_result("blocked by policy", "FORBIDDEN")
            result = await call_next(operation)
            seen.append(f"{name} done")
            return result

        return make_plugin(name, plugboard_operation_steps=lambda: [step])

    client = await aiohttp_client(make_app(plugins=[stepper("outer"), stepper("inner", True), echo_plugin()]))
    resp = await client.post("/graphql", json={"query": "{ hello }"})
    assert (await resp.json())["data"] == {"hello": "hello world"}
    assert seen == ["outer:query:http", "inner:query:http", "inner done", "outer done"]
    resp = await client.post("/graphql", json={"query": "{ boom }"})
    assert (await resp.json())["errors"][0]["message"] == "blocked by policy"


async def test_step_raising_graphql_error_sets_http_status(make_app, aiohttp_client):
    from core_testkit import echo_plugin
    from plugboard.graphql.errors import GraphQLError

    async def limiter(operation, call_next):
        raise GraphQLError("slow down", "TOO_MANY_REQUESTS", headers={"Retry-After": "7"})

    client = await aiohttp_client(make_app(plugins=[make_plugin("limit", plugboard_operation_steps=lambda: [limiter]), echo_plugin()]))
    resp = await client.post("/graphql", json={"query": "{ hello }"})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json(content_type=None))["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"


async def test_startup_failure_tears_down_what_started(make_app, aiohttp_client):
    calls = []

    async def good(app):
        calls.append("good up")
        yield
        calls.append("good down")

    async def bad(app):
        raise RuntimeError("cannot reach the thing")
        yield  # pragma: no cover

    app = make_app(plugins=[make_plugin("good", plugboard_lifespan=good), make_plugin("bad", plugboard_lifespan=bad)])
    # What web.run_app does: set up, and clean up whatever started if that fails.
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match="cannot reach the thing"):
        try:
            await runner.setup()
        finally:
            await runner.cleanup()
    assert calls == ["good up", "good down"]


async def test_duplicate_route_names_both(make_app):
    async def handler(request):
        return web.Response()

    a = make_plugin("a", plugboard_routes=lambda: [web.get("/x", handler)])
    b = make_plugin("b", plugboard_routes=lambda: [web.get("/x", handler)])
    with pytest.raises(Exception) as e:
        make_app(plugins=[a, b])
    assert "route GET /x is served by both plugin 'a' and plugin 'b'" in str(e.value)
    c = make_plugin("c", plugboard_routes=lambda: [web.post("/graphql", handler)])
    with pytest.raises(Exception) as e:
        make_app(plugins=[c])
    assert "the core and plugin 'c'" in str(e.value)


def test_every_hookspec_is_documented():
    """Port of Datasette's test_plugin_hooks_are_documented: every argument has a :param."""
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith(HOOK_PREFIX):
            continue
        doc = inspect.getdoc(spec) or ""
        assert len(doc) > 80, f"{name} needs a real docstring"
        for arg in inspect.signature(spec).parameters:
            assert f":param {arg}:" in doc, f"{name} does not document {arg}"
