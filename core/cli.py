"""The ``plugboard`` command: serve, check, config, plugins, schema, init, new-plugin,
plus the commands plugins add (``plugboard_commands``).

Start-up problems (bad settings, a plugin that will not load, a schema that
does not compose, an unreachable service) print one message, without a
traceback, and exit with status 2. Bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from plugboard import __version__
from plugboard.errors import PlugboardError
from plugboard.units import MaskURLsFilter, mask_urls

EXIT_USAGE = 2


def _load(args: argparse.Namespace):
    from plugboard.settings import Settings

    return Settings.load(Path(args.root).resolve(), env=args.env, config_file=args.config)


def _build(args: argparse.Namespace):
    from plugboard.app import create_app

    settings = _load(args)
    return settings, create_app(settings)


def _use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def cmd_serve(args: argparse.Namespace) -> int:
    from plugboard import keys

    settings, app = _build(args)  # validate everything before binding or forking
    server = app[keys.CORE_CONFIG].server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    workers = args.workers or server.workers
    if workers > 1:
        return _serve_workers(args, host, port, workers)
    return _run(app, host, port, reuse_port=False)


def _run(app: Any, host: str, port: int, *, reuse_port: bool) -> int:
    from aiohttp import web

    from plugboard import keys

    server = app[keys.CORE_CONFIG].server
    loop_name = "uvloop" if _use_uvloop() else "asyncio"
    access_log = logging.getLogger("aiohttp.access") if server.access_log else None
    print(f"plugboard {__version__}: serving on http://{host}:{port} ({loop_name}, pid {os.getpid()})", flush=True)
    app.on_startup.append(_freeze_startup_objects)
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            reuse_port=reuse_port,
            shutdown_timeout=server.shutdown_grace,
            access_log=access_log,
            print=None,
            handle_signals=True,
        )
    except PlugboardError as e:
        print(f"plugboard: {mask_urls(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    return 0


#: Allocations between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 7000


async def _freeze_startup_objects(app: Any) -> None:
    # Everything built at start-up (schema, plugins, pools) lives as long as
    # the process: moving it out of the collector's sight keeps full
    # collections, and their pauses, short on a busy server.
    gc.freeze()
    # A request allocates hundreds of containers (the result's dicts and
    # lists), nearly all freed by reference counting, yet each 700 start a
    # collection that walks every young object of the requests in flight:
    # on the books query that was 3% of the CPU. Ten times fewer collections
    # cost a few thousand more objects alive between them.
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _serve_workers(args: argparse.Namespace, host: str, port: int, workers: int) -> int:
    """N processes on one port with SO_REUSEPORT; the kernel spreads connections."""
    if not hasattr(socket, "SO_REUSEPORT"):
        print("plugboard: --workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
        return EXIT_USAGE
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            # Each worker builds its own app after the fork: no event loop,
            # pool or socket is shared between processes.
            _, app = _build(args)
            os._exit(_run(app, host, port, reuse_port=True))
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from plugboard import checkreport, keys

    settings, app = _build(args)
    engine = app[keys.ENGINE]

    async def cook() -> None:
        await engine.cook()
        engine.drop()

    asyncio.run(cook())
    data = checkreport.report(app)
    data["settings"] = str(settings.root)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if args.fields is not None:
        plugin = next((p for p in data["plugins"] if p["name"] == args.fields), None)
        if plugin is None:
            names = ", ".join(p["name"] for p in data["plugins"])
            print(f"plugboard: no loaded plugin named {args.fields!r}; loaded: {names}", file=sys.stderr)
            return EXIT_USAGE
        print("\n".join(plugin["fields"]))
        return 0
    print("\n".join(checkreport.table(data)))
    if args.verbose:
        for plugin in data["plugins"]:
            print()
            print("\n".join(checkreport.listing(plugin)))
    print()
    print("\n".join(checkreport.wrap(data["cors"])))
    print(
        f"\nOK: {len(data['plugins'])} plugins, {data['schema_fields']} schema fields\nsettings from {settings.root}"
        + ("" if args.verbose else "\n(--verbose lists each plugin's hooks and fields; --fields PLUGIN one plugin's fields)")
    )
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def cmd_config(args: argparse.Namespace) -> int:
    from plugboard import keys
    from plugboard.config import iter_fields
    from plugboard.core_config import CORE_SECTIONS

    settings, app = _build(args)
    classes: dict[str, type] = dict(CORE_SECTIONS)
    pm = app[keys.PLUGIN_MANAGER]
    for plugin, cls in pm.call_each("plugboard_config_class"):
        if cls is not None:
            classes[plugin] = cls
    core = app[keys.CORE_CONFIG]
    instances = {name: getattr(core, name) for name in CORE_SECTIONS}
    instances.update({k: v for k, v in app[keys.PLUGIN_CONFIGS].items() if v is not None})
    rows = []
    for section, cls in classes.items():
        for key, _default, secret in iter_fields(cls, section):
            value = _lookup(instances[section], key.split(".")[1:])
            rows.append((key, _shown(value, secret), settings.source(key)))
    for decl in app[keys.SERVICES].declared():
        rows.append((f"{decl.key}.provider", repr(decl.provider), settings.source(f"{decl.key}.provider")))
        if decl.config is not None:
            for key, _default, secret in iter_fields(type(decl.config), decl.key):
                value = _lookup(decl.config, key.split(".")[decl.key.count(".") + 1 :])
                rows.append((key, _shown(value, secret), settings.source(key)))
    if args.key:
        wanted = args.key.lower()
        rows = [r for r in rows if r[0] == wanted or r[0].startswith(wanted + ".")]
        if not rows:
            print(f"plugboard: no setting named {args.key!r}", file=sys.stderr)
            return EXIT_USAGE
    _print_table(("key", "value", "source"), rows)
    return 0


def _shown(value: Any, secret: bool) -> str:
    """A setting's value as printed: secrets as ``'***'``, passwords inside URLs masked."""
    if secret and value:
        return "'***'"
    return mask_urls(repr(value))


def _lookup(obj: Any, path: list[str]) -> Any:
    for part in path:
        obj = getattr(obj, part, None) if not isinstance(obj, dict) else obj.get(part)
    return obj


def cmd_plugins(args: argparse.Namespace) -> int:
    from plugboard.pluginmanager import installed_plugins

    settings = _load(args)
    entries = {e.name: e for e in settings.plugin_entries()}
    installed = installed_plugins()
    rows = []
    for name in sorted(set(installed) | set(entries)):
        ep = installed.get(name)
        source = f"{ep.dist.name} {ep.dist.version}" if ep is not None and ep.dist is not None else ("dotted path" if ep is None else ep.value)
        entry = entries.get(name)
        state = "enabled" if entry and entry.enabled else ("disabled" if entry else "not declared")
        rows.append((name, state, source))
    _print_table(("plugin", "state", "from"), rows)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from plugboard import keys

    _, app = _build(args)
    print(app[keys.COMPOSED_SCHEMA].sdl)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from plugboard.scaffold import init_project
    from plugboard.scaffold.features import FEATURES, UnknownFeature, parse_features

    text = args.features
    if text is None and sys.stdin.isatty():
        print("Features to set up (the seed's feature sets):")
        for feature in FEATURES.values():
            print(f"  {feature.name:<11} {feature.summary}")
        try:
            text = input("Comma-separated names, empty for none: ")
        except EOFError:
            text = ""
    try:
        features = parse_features(text or "")
    except UnknownFeature as e:
        print(f"plugboard: {e}", file=sys.stderr)
        return EXIT_USAGE
    return init_project(Path(args.dir), force=args.force, features=features)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from plugboard.scaffold import new_plugin

    return new_plugin(args.name, Path(args.dir), force=args.force)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=os.environ.get("PLUGBOARD_ROOT", "."), help="folder holding settings.yaml (default: .)")
    common.add_argument("--config", help="overlay file on top of settings.yaml (default: config/$PLUGBOARD_ENV.yaml)")
    common.add_argument("--env", help="overlay name: config/<ENV>.yaml (default: $PLUGBOARD_ENV)")
    return common


def plugin_commands(argv: Sequence[str]) -> tuple[list[tuple[str, Any]], str | None]:
    """Commands the declared plugins add, and the error that hid them, if any.

    The settings are found from the same options the command will get, so
    ``plugboard worker --root deploy/`` sees the plugins ``deploy/`` enables.
    """
    from plugboard import builtin_hooks
    from plugboard.commands import Command
    from plugboard.pluginmanager import build_plugin_manager

    known, _ = _common_options().parse_known_args(list(argv))
    try:
        settings = _load(known)
        names = [e.name for e in settings.plugin_entries() if e.enabled]
        pm = build_plugin_manager(names, builtin=builtin_hooks)
    except PlugboardError as e:
        return [], str(e)
    commands: list[tuple[str, Any]] = []
    for plugin, returned in pm.call_each("plugboard_commands"):
        for command in returned or []:
            if not isinstance(command, Command):
                return [], f"plugin {plugin!r}: plugboard_commands must return plugboard.commands.Command objects, got {command!r}"
            commands.append((plugin, command))
    return commands, None


def build_parser(extra: Sequence[tuple[str, Any]] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plugboard", description="A configuration-driven GraphQL plugin runtime.")
    parser.add_argument("--version", action="version", version=f"plugboard {__version__}")
    common = _common_options()
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", parents=[common], help="load everything, print the plugin table")
    p.add_argument("-v", "--verbose", action="store_true", help="list each plugin's hooks, providers and schema fields")
    p.add_argument("--fields", metavar="PLUGIN", help="print one plugin's schema fields, one a line")
    p.add_argument("--json", action="store_true", help="the whole report as JSON, for tools")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", parents=[common], help="effective settings and where each came from")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("plugins", parents=[common], help="installed and enabled plugins")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("schema", parents=[common], help="print the composed SDL")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("init", help="scaffold settings.yaml and schema.d in DIR")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--force", action="store_true")
    p.add_argument(
        "--features",
        metavar="LIST",
        help="comma-separated: uploads,email,jobs,cache,protection,realtime (asked for when stdin is a terminal)",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("new-plugin", help="scaffold a pip-installable plugin package")
    p.add_argument("name")
    p.add_argument("--dir", default=".")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_new_plugin)

    owners = {name: "plugboard core" for name in sub.choices}
    for plugin, command in extra:
        if command.name in owners:
            raise PlugboardError(f"plugin {plugin!r} adds command {command.name!r}, which {owners[command.name]} already has")
        owners[command.name] = f"plugin {plugin!r}"
        p = sub.add_parser(command.name, parents=[common], help=f"{command.help} (plugin {plugin})")
        if command.add_arguments is not None:
            command.add_arguments(p)
        p.set_defaults(func=_plugin_command(command))
    return parser


def _plugin_command(command: Any) -> Any:
    from plugboard.commands import CommandContext

    def run(args: argparse.Namespace) -> int:
        return command.run(CommandContext(args))

    return run


CORE_COMMANDS = ("serve", "check", "config", "plugins", "schema", "init", "new-plugin")


def main(argv: Sequence[str] | None = None) -> int:

    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    extra, load_error = ([], None) if wanted in CORE_COMMANDS else plugin_commands(argv)
    if load_error is not None and wanted is not None:
        # The command may come from a plugin that could not be loaded: say
        # why, rather than argparse's "invalid choice".
        print(f"plugboard: {mask_urls(str(load_error))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        parser = build_parser(extra)
    except PlugboardError as e:
        print(f"plugboard: {mask_urls(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PLUGBOARD_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskURLsFilter())
    try:
        return args.func(args)
    except PlugboardError as e:
        print(f"plugboard: {mask_urls(str(e))}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
