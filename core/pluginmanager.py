"""Finding, importing and ordering the plugins that settings.yaml declares.

One :class:`PluginManager` per app: there is no process-wide manager. Only
declared plugins load; a name resolves through the ``plugboard.plugins``
entry-point group, else as a dotted import path. Hook implementations are
called in declared order (the ``plugins:`` list), not pluggy's LIFO, so the
first declared plugin's middleware and operation steps are outermost.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points, version as dist_version, PackageNotFoundError
from types import ModuleType
from typing import Any, Iterable, Iterator

import attrs
import pluggy

from plugboard import hookspecs
from plugboard.errors import PluginLoadError

ENTRY_POINT_GROUP = "plugboard.plugins"
HOOK_PREFIX = "plugboard_"


@attrs.define(frozen=True)
class LoadedPlugin:
    """A registered plugin: its settings name, the object, and where it came from."""

    name: str
    plugin: Any
    origin: str  # "entry point plugboard-books 0.1.0", "module pkg.mod", "object"
    version: str | None = None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with Plugboard's prefix rule and declared-order calls."""

    def __init__(self) -> None:
        super().__init__("plugboard")
        self.add_hookspecs(hookspecs)
        self.loaded: dict[str, LoadedPlugin] = {}
        # Historic: every plugin registered from now on gets its
        # plugboard_addhooks called at registration, before check_pending
        # looks for hooks without a spec.
        self.hook.plugboard_addhooks.call_historic(kwargs={"pluginmanager": self})

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        # As pytest does: a plugboard_-prefixed function is a hookimpl even
        # without the marker, so a forgotten @hookimpl is not silently ignored.
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts

    def add(self, name: str, plugin: Any, origin: str, version: str | None = None) -> None:
        try:
            self.register(plugin, name=name)
        except ValueError as e:
            raise PluginLoadError(f"plugin {name!r} ({origin}) could not be registered: {e}") from e
        except pluggy.PluginValidationError as e:
            raise PluginLoadError(f"plugin {name!r} ({origin}) has an invalid hook: {e}") from e
        self.loaded[name] = LoadedPlugin(name, plugin, origin, version)

    def ordered_impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        """Implementations of a hook in declared plugin order."""
        order = {name: i for i, name in enumerate(self.loaded)}
        impls = getattr(self.hook, hook_name).get_hookimpls()
        return sorted(impls, key=lambda impl: order.get(impl.plugin_name, len(order)))

    def call_each(self, hook_name: str, *, reverse: bool = False, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call each implementation in declared order; yield ``(plugin_name, result)``.

        Each implementation gets only the arguments it names, and ``config``
        is that plugin's own validated config (from ``configs``).
        """
        configs = kwargs.pop("configs", {})
        impls = self.ordered_impls(hook_name)
        for impl in reversed(impls) if reverse else impls:
            args = dict(kwargs, config=configs.get(impl.plugin_name))
            try:
                call_args = {a: args[a] for a in impl.argnames}
            except KeyError as e:
                raise PluginLoadError(
                    f"plugin {impl.plugin_name!r}: {hook_name} asks for unknown argument {e}"
                ) from None
            yield impl.plugin_name, impl.function(**call_args)

    def call_all(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """:meth:`call_each` for hooks called for their effect: run them all now."""
        return list(self.call_each(hook_name, **kwargs))

    def plugin_version(self, name: str) -> str | None:
        return self.loaded[name].version if name in self.loaded else None


def installed_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Every plugin installed under the entry-point group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _dist_version(ep: importlib.metadata.EntryPoint) -> str | None:
    if ep.dist is not None:
        return ep.dist.version
    try:
        return dist_version(ep.module.split(".")[0])
    except PackageNotFoundError:
        return None


def import_plugin(name: str) -> tuple[Any, str, str | None]:
    """Resolve a declared name to a plugin object: entry point first, then dotted path."""
    installed = installed_plugins()
    if name in installed:
        ep = installed[name]
        try:
            obj = ep.load()
        except Exception as e:
            raise PluginLoadError(
                f"plugin {name!r}: error importing {ep.value!r}: {type(e).__name__}: {e}"
            ) from e
        dist = ep.dist.name if ep.dist is not None else ep.module
        version = _dist_version(ep)
        return obj, f"entry point {dist} {version or ''}".rstrip(), version
    if "." in name or name.isidentifier():
        try:
            obj = _import_dotted(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                known = ", ".join(sorted(installed)) or "none"
                raise PluginLoadError(
                    f"unknown plugin {name!r}: not an installed plugin (installed: {known}) "
                    f"and not an importable module"
                ) from None
            raise PluginLoadError(f"plugin {name!r}: error importing it: {e}") from e
        except PluginLoadError:
            raise
        except Exception as e:
            raise PluginLoadError(f"plugin {name!r}: error importing it: {type(e).__name__}: {e}") from e
        version = getattr(obj, "__version__", None)
        return obj, f"module {name}", version
    known = ", ".join(sorted(installed)) or "none"
    raise PluginLoadError(f"unknown plugin {name!r} (installed: {known})")


def _import_dotted(path: str) -> Any:
    # "pkg.mod" is a module; "pkg.mod:obj" names an object inside it.
    module_name, _, attr = path.partition(":")
    module: ModuleType = importlib.import_module(module_name)
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginLoadError(f"plugin {path!r}: module {module_name!r} has no {attr!r}") from None


def build_plugin_manager(names: Iterable[str], extra: Iterable[Any] = (), *, builtin: Any = None) -> PluginManager:
    """Import and register each declared plugin, then check requirements and hooks.

    ``builtin`` is the core's own hook module, registered first as ``core``.
    ``extra`` are plugin objects passed in code (tests, embedding apps); they
    are registered after the declared ones, under their ``plugboard_name``,
    ``__name__`` or a generated name.
    """
    pm = PluginManager()
    errors: list[str] = []
    if builtin is not None:
        pm.add("core", builtin, "plugboard core")
    for name in names:
        try:
            obj, origin, version = import_plugin(name)
            pm.add(name, obj, origin, version)
        except PluginLoadError as e:
            errors.append(str(e))
    for i, obj in enumerate(extra):
        name = getattr(obj, "plugboard_name", None) or getattr(obj, "__name__", None) or f"plugin-{i}"
        try:
            pm.add(name, obj, "object", getattr(obj, "__version__", None))
        except PluginLoadError as e:
            errors.append(str(e))
    if errors:
        raise PluginLoadError("\n".join(errors))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        plugin_name = pm.get_name(e.plugin) if e.plugin is not None else "?"
        raise PluginLoadError(f"plugin {plugin_name!r}: {e}") from e
    missing = []
    for name, required in pm.call_each("plugboard_requires"):
        for req in required or []:
            if req not in pm.loaded:
                missing.append(f"plugin {name!r} requires plugin {req!r}, which is not enabled in settings.yaml `plugins:`")
    if missing:
        raise PluginLoadError("\n".join(missing))
    return pm
