"""Loading settings from YAML files and the environment, remembering where each value came from.

:meth:`Settings.load` reads, later winning over earlier and nested mappings
merging: ``settings.yaml``, an overlay (``--config`` or
``config/$PLUGBOARD_ENV.yaml``), ``.secrets.yaml``, the seed's plain variable
names declared under ``env_aliases:`` (``REDIS_URL``), and finally
``PLUGBOARD_<SECTION>__<KEY>`` variables, whose values are parsed the way
dynaconf parses them (``"5"`` is 5, ``"true"`` is True, ``"[1, 2]"`` a list).
Keys are normalized once on the way in (lower case, camelCase to snake_case),
so every later lookup is by one spelling. Each layer is kept, so
:meth:`Settings.source` can say ``settings.yaml:12`` or
``env PLUGBOARD_SERVER__PORT`` for any key, which is what every error message
and ``plugboard config`` print. A Settings object is immutable:
:meth:`Settings.with_overrides` returns a new one.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs
import yaml
from dynaconf.utils.parse_conf import Lazy, MetaValue, boolean_fix, parse_conf_data

from plugboard.config import normalize_key, parse_bool
from plugboard.errors import ConfigError, ConfigProblem

__all__ = ["ENV_PREFIX", "PluginEntry", "Settings"]

#: Prefix of the environment variables that set keys: PLUGBOARD_SERVER__PORT.
ENV_PREFIX = "PLUGBOARD_"
#: Separator of nesting levels in those variables (dynaconf's convention).
ENV_NESTING = "__"
#: PLUGBOARD_ variables that steer loading or the CLI and are never settings.
META_VARIABLES = frozenset({"ENV", "ROOT", "CONFIG"})
#: Top-level keys that are not plugin or core sections.
RESERVED_KEYS = ("plugins", "env_aliases")
#: Aliases for the core's own keys, in force even when settings.yaml declares
#: none; ``env_aliases:`` adds to them (and may remap them).
CORE_ENV_ALIASES = {"REDIS_URL": "redis.url"}

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_ENV_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@attrs.define(frozen=True)
class PluginEntry:
    """One item of ``plugins:``: a plugin name, and whether it is switched on."""

    name: str
    enabled: bool = True


@attrs.define(frozen=True)
class _Layer:
    """One source of settings: a YAML file, one environment variable, or an override."""

    kind: str  # "file", "env" or "override"
    identifier: str  # path relative to root, variable name, or "override"
    data: dict[str, Any]
    text: str | None = None  # YAML source, for line numbers

    def describe(self, line: int | None = None) -> str:
        if self.kind == "env":
            return f"env {self.identifier}"
        if self.kind == "file":
            return f"{self.identifier}:{line}" if line else self.identifier
        return self.identifier


class Settings:
    """Merged settings of one project, with the source of every value.

    Build it with :meth:`load` (files and environment) or :meth:`from_mapping`
    (tests, embedding); the constructor is internal.
    """

    def __init__(self, root: Path, layers: Iterable[_Layer], *, env: str | None = None) -> None:
        self._root = root
        self._layers = tuple(layers)
        self._env = env
        data: dict[str, Any] = {}
        for layer in self._layers:
            data = _merge(data, layer.data)
        self._data = data
        self._composed: dict[str, yaml.Node | None] = {}

    def __repr__(self) -> str:
        # Values may be secrets: show only where they came from.
        sources = ", ".join(layer.describe() for layer in self._layers)
        return f"Settings(root={str(self._root)!r}, sources=[{sources}])"

    # -- construction -----------------------------------------------------------

    @classmethod
    def load(
        cls,
        root: Path,
        *,
        env: str | None = None,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read ``root``'s settings files and the environment.

        :param root: the folder holding ``settings.yaml``.
        :param env: names the overlay ``config/<env>.yaml``; defaults to
            ``PLUGBOARD_ENV`` from ``environ``.
        :param config_file: an overlay file used instead of ``config/<env>.yaml``
            (relative paths are tried from the current folder, then from root).
        :param environ: the environment to read (default ``os.environ``).
        :raises ConfigError: for a missing overlay, a YAML syntax error, a key
            spelt two ways in one mapping or a bad ``env_aliases`` entry.
        """
        root = Path(root)
        environ = os.environ if environ is None else environ
        if not root.is_dir():
            raise ConfigError(ConfigProblem("root", str(root), "not a folder", "argument"))
        problems: list[ConfigProblem] = []
        files: list[Path] = []
        if (root / "settings.yaml").is_file():
            files.append(root / "settings.yaml")
        env_source = "argument --env" if env else f"env {ENV_PREFIX}ENV"
        env = env or environ.get(f"{ENV_PREFIX}ENV") or None
        overlay = _overlay_path(root, env, env_source, config_file, problems)
        if overlay is not None:
            files.append(overlay)
        if (root / ".secrets.yaml").is_file():
            files.append(root / ".secrets.yaml")

        layers = [layer for path in files if (layer := _read_yaml(path, root, problems)) is not None]
        explicit = _explicit_env_layers(environ, problems)
        file_data: dict[str, Any] = {}
        for layer in layers:
            file_data = _merge(file_data, layer.data)
        declared = file_data.get("env_aliases")
        if declared is None or isinstance(declared, Mapping):
            declared = {**CORE_ENV_ALIASES, **(declared or {})}
        aliases = _alias_layers(declared, environ, explicit, layers, root, problems)
        if problems:
            raise ConfigError(problems)
        return cls(root, [*layers, *aliases, *(layer for _, layer in explicit)], env=env)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, root: Path | None = None) -> Settings:
        """Settings from a plain mapping (tests, embedding); every value's source is ``override``."""
        return cls(Path.cwd() if root is None else Path(root), [_override_layer(data)])

    def with_overrides(self, data: Mapping[str, Any]) -> Settings:
        """Return new settings with ``data`` deep-merged on top (source ``override``)."""
        return type(self)(self._root, [*self._layers, _override_layer(data)], env=self._env)

    # -- reading ----------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The folder settings were read from (``schema.d`` and relative paths live here)."""
        return self._root

    @property
    def env(self) -> str | None:
        """The overlay environment name (``production``), if one was used."""
        return self._env

    def as_dict(self) -> dict[str, Any]:
        """Every merged value as plain data (a copy)."""
        return copy.deepcopy(self._data)

    def get(self, dotted_key: str, default: Any = None) -> Any:
        """The effective value of ``server.port`` (any case), or ``default`` when unset."""
        found, value = _walk(self._data, _parse_path(dotted_key))
        return copy.deepcopy(value) if found else default

    def section(self, name: str) -> dict[str, Any]:
        """The mapping under the top-level key ``name``; ``{}`` when absent or null.

        :raises ConfigError: when the key holds something other than a mapping.
        """
        key = normalize_key(name)
        value = self._data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(ConfigProblem(key, value, "expected a mapping of settings", self.source(key)))
        return copy.deepcopy(dict(value))

    def sections(self) -> list[str]:
        """Top-level keys other than ``plugins`` and ``env_aliases``, in file order."""
        return [key for key in self._data if key not in RESERVED_KEYS]

    def plugin_entries(self) -> list[PluginEntry]:
        """The ``plugins:`` list, each item a name or ``{name: ..., enabled: ...}``.

        :raises ConfigError: naming ``plugins[i]`` for every bad or repeated entry.
        """
        raw = self._data.get("plugins")
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ConfigError(
                ConfigProblem("plugins", raw, "expected a list of plugin names", self.source("plugins"))
            )
        problems: list[ConfigProblem] = []
        entries: list[PluginEntry] = []
        first_seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            key = f"plugins[{i}]"

            def bad(reason: str, item: Any = item, key: str = key) -> None:
                problems.append(ConfigProblem(key, item, reason, self.source(key)))

            entry = _plugin_entry(item, bad)
            if entry is None:
                continue
            if entry.name in first_seen:
                bad(f"plugin {entry.name!r} is declared twice (first as plugins[{first_seen[entry.name]}])")
                continue
            first_seen[entry.name] = i
            entries.append(entry)
        if problems:
            raise ConfigError(problems)
        return entries

    def source(self, dotted_key: str) -> str:
        """Where the effective value of ``dotted_key`` came from.

        ``settings.yaml:12``, ``config/production.yaml:3``, ``.secrets.yaml:2``,
        ``env PLUGBOARD_SERVER__PORT``, ``env REDIS_URL``, ``override``, or
        ``default`` when no source sets the key. ``plugins[2]`` and camelCase
        or upper-case spellings are understood.
        """
        path = _parse_path(dotted_key)
        found, effective = _walk(self._data, path)
        if not found:
            return "default"
        for layer in reversed(self._layers):
            found, value = _walk(layer.data, path)
            # A null section in an overlay does not replace the earlier mapping.
            if not found or (value is None and isinstance(effective, Mapping)):
                continue
            return layer.describe(self._line(layer, path))
        return "default"

    def _line(self, layer: _Layer, path: list[str | int]) -> int | None:
        if layer.text is None:
            return None
        if layer.identifier not in self._composed:
            # Composed lazily: only error messages and `plugboard config` need lines.
            try:
                self._composed[layer.identifier] = yaml.compose(layer.text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                self._composed[layer.identifier] = None
        return _node_line(self._composed[layer.identifier], path)


# -- loading helpers --------------------------------------------------------------


def _overlay_path(
    root: Path,
    env: str | None,
    env_source: str,
    config_file: str | Path | None,
    problems: list[ConfigProblem],
) -> Path | None:
    if config_file is not None:
        given = Path(config_file)
        candidates = [given] if given.is_absolute() else [given, root / given]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        problems.append(ConfigProblem("config", str(config_file), "overlay file not found", "argument --config"))
        return None
    if env is None:
        return None
    if not _ENV_NAME.fullmatch(env):
        problems.append(ConfigProblem("env", env, "not an environment name (letters, digits, '_', '-', '.')", env_source))
        return None
    path = root / "config" / f"{env}.yaml"
    if path.is_file():
        return path
    available = sorted(p.stem for p in (root / "config").glob("*.yaml")) if (root / "config").is_dir() else []
    problems.append(
        ConfigProblem(
            "env",
            env,
            f"no overlay file config/{env}.yaml (available: {', '.join(available) or 'none'})",
            env_source,
        )
    )
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _read_yaml(path: Path, root: Path, problems: list[ConfigProblem]) -> _Layer | None:
    identifier = _relative(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(ConfigProblem(identifier, None, f"cannot read the file: {e}", identifier))
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        shown = _error_line(text, mark.line, identifier) if mark else None
        where = f" (line {line}, column {mark.column + 1})" if mark else ""
        problems.append(
            ConfigProblem(
                identifier,
                shown,
                f"not valid YAML: {e.problem or e.context}{where}",
                f"{identifier}:{line}" if line else identifier,
            )
        )
        return None
    except yaml.YAMLError as e:
        problems.append(ConfigProblem(identifier, None, f"not valid YAML: {e}", identifier))
        return None
    if data is None:  # an empty or all-comments file
        data = {}
    if not isinstance(data, Mapping):
        problems.append(ConfigProblem(identifier, None, "expected a mapping of sections at the top level", f"{identifier}:1"))
        return None
    layer = _Layer("file", identifier, {}, text)
    clashes: list[tuple[str, Any, str]] = []
    normalized = _normalize(data, [], clashes)
    node: yaml.Node | None = None
    for key, value, reason in clashes:
        if node is None:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        problems.append(ConfigProblem(key, value, reason, layer.describe(_node_line(node, _parse_path(key)))))
    return attrs.evolve(layer, data=normalized)


_SENSITIVE = ("secret", "password", "passwd", "token", "key", "credential")


def _error_line(text: str, index: int, identifier: str) -> str | None:
    """The text of the line a YAML error points at, unless it may hold a secret."""
    lines = text.splitlines()
    if index >= len(lines):
        return None
    line = lines[index].strip()
    if identifier.endswith(".secrets.yaml") or any(word in line.lower() for word in _SENSITIVE):
        return "***"
    return line


def _parse_env_value(text: str) -> Any:
    """Parse an environment value the way dynaconf's env loader does."""
    value = parse_conf_data(boolean_fix(text), tomlfy=True, box_settings={})
    # Lazy templates (@format, @jinja) and merge markers need a dynaconf
    # settings object to mean anything; TOML dates are never what a setting
    # wants. Keep the text for all of them.
    if isinstance(value, (Lazy, MetaValue, datetime.date, datetime.time)):
        return text
    return _plain(value)


def _explicit_env_layers(environ: Mapping[str, str], problems: list[ConfigProblem]) -> list[tuple[list[str], _Layer]]:
    found: list[tuple[list[str], _Layer]] = []
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX):] in META_VARIABLES:
            continue
        parts = name[len(ENV_PREFIX):].split(ENV_NESTING)
        if not all(parts):
            problems.append(
                ConfigProblem(name, None, "not a settings variable; expected PLUGBOARD_<SECTION>__<KEY>", f"env {name}")
            )
            continue
        value = _parse_env_value(text)
        # PLUGBOARD_<SECTION>='{...}' or PLUGBOARD_PLUGINS='[...]' set whole
        # top-level keys; any other un-nested variable belongs to some other
        # tool using the same prefix.
        if len(parts) == 1 and not isinstance(value, (dict, list)):
            continue
        path = [normalize_key(p) for p in parts]
        clashes: list[tuple[str, Any, str]] = []
        data = _nest(path, _normalize(value, path, clashes))
        for key, value_, reason in clashes:
            problems.append(ConfigProblem(key, value_, reason, f"env {name}"))
        found.append((path, _Layer("env", name, data)))
    # Broad variables first, so PLUGBOARD_SERVER__PORT wins over PLUGBOARD_SERVER='{port=1}'.
    found.sort(key=lambda item: (len(item[0]), item[1].identifier))
    return found


def _alias_layers(
    aliases: Any,
    environ: Mapping[str, str],
    explicit: list[tuple[list[str], _Layer]],
    file_layers: list[_Layer],
    root: Path,
    problems: list[ConfigProblem],
) -> list[_Layer]:
    if aliases is None:
        return []

    def source(key: str) -> str:
        return Settings(root, file_layers).source(key)

    if not isinstance(aliases, Mapping):
        problems.append(
            ConfigProblem("env_aliases", aliases, "expected a mapping of VARIABLE: section.key", source("env_aliases"))
        )
        return []
    layers = []
    for variable, target in aliases.items():
        key = f"env_aliases.{variable}"
        if not isinstance(target, str) or not target.strip() or not _PATH_PART.search(target):
            problems.append(ConfigProblem(key, target, "expected a dotted settings key such as redis.url", source(key)))
            continue
        text = environ.get(str(variable))
        # A blank variable (`REDIS_URL=` in an .env template) means "not set".
        if text is None or text == "":
            continue
        path = [p for p in _parse_path(target) if isinstance(p, str)]
        if any(path[: len(other)] == other for other, _ in explicit):
            continue  # the explicit PLUGBOARD_ variable wins over its alias
        clashes: list[tuple[str, Any, str]] = []
        value = _normalize(_parse_env_value(text), path, clashes)
        for ckey, cvalue, reason in clashes:
            problems.append(ConfigProblem(ckey, cvalue, reason, f"env {variable}"))
        layers.append(_Layer("env", str(variable), _nest(path, value)))
    return layers


def _override_layer(data: Mapping[str, Any]) -> _Layer:
    if not isinstance(data, Mapping):
        raise ConfigError(ConfigProblem("settings", None, "expected a mapping of sections", "override"))
    clashes: list[tuple[str, Any, str]] = []
    normalized = _normalize(data, [], clashes)
    if clashes:
        raise ConfigError([ConfigProblem(key, value, reason, "override") for key, value, reason in clashes])
    return _Layer("override", "override", normalized)


def _plugin_entry(item: Any, bad: Any) -> PluginEntry | None:
    if isinstance(item, str):
        if not item.strip():
            bad("expected a plugin name")
            return None
        return PluginEntry(item.strip())
    if not isinstance(item, Mapping):
        bad("expected a plugin name or a mapping {name: ..., enabled: ...}")
        return None
    ok = True
    for key in item:
        if key not in ("name", "enabled"):
            bad(f"unknown key {key!r}; expected one of: name, enabled")
            ok = False
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        bad("expected 'name': the plugin's name")
        ok = False
    try:
        enabled = parse_bool(item.get("enabled", True))
    except ValueError:
        bad("expected 'enabled' to be true or false")
        ok = False
    if not ok:
        return None
    return PluginEntry(name.strip(), enabled)


# -- data helpers -----------------------------------------------------------------


def _normalize(value: Any, path: list[str | int], clashes: list[tuple[str, Any, str]]) -> Any:
    """Copy ``value`` with every mapping key in field-name form; record keys spelt twice."""
    if isinstance(value, Mapping):
        # env_aliases maps environment variable names, which are case-sensitive.
        keep_keys = path == ["env_aliases"]
        out: dict[str, Any] = {}
        written: dict[str, str] = {}
        for raw_key, item in value.items():
            key = str(raw_key) if keep_keys else normalize_key(raw_key)
            if key in written:
                clashes.append((_format_path([*path, key]), item, f"both {written[key]!r} and {str(raw_key)!r} are set; keep one"))
                continue
            written[key] = str(raw_key)
            out[key] = _normalize(item, [*path, key], clashes)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(item, [*path, i], clashes) for i, item in enumerate(value)]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _merge(base: Any, new: Any) -> Any:
    """Deep-merge mappings; anything else (lists included) is replaced by the newer value."""
    if isinstance(base, Mapping) and isinstance(new, Mapping):
        out = dict(base)
        for key, value in new.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    # An overlay's `section:` with every key commented out is null; it should
    # not wipe the section the base file set.
    if new is None and isinstance(base, Mapping):
        return base
    return copy.deepcopy(new)


def _parse_path(dotted_key: str) -> list[str | int]:
    path: list[str | int] = []
    for match in _PATH_PART.finditer(dotted_key):
        name, index = match.groups()
        path.append(int(index) if index is not None else name)
    return path


def _format_path(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _lookup(mapping: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    if key in mapping:
        return True, mapping[key]
    wanted = normalize_key(key)
    for candidate, value in mapping.items():
        if normalize_key(candidate) == wanted:
            return True, value
    return False, None


def _walk(data: Any, path: list[str | int]) -> tuple[bool, Any]:
    node = data
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False, None
            node = node[part]
        else:
            if not isinstance(node, Mapping):
                return False, None
            found, node = _lookup(node, part)
            if not found:
                return False, None
    return True, node


def _node_line(node: yaml.Node | None, path: list[str | int]) -> int | None:
    """The 1-based line of the key (or list item) at ``path`` in a composed YAML document."""
    line = None
    for part in path:
        if node is None:
            return line
        if isinstance(part, int):
            if not isinstance(node, yaml.SequenceNode) or part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            return line
        wanted = normalize_key(part)
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and normalize_key(key_node.value) == wanted:
                node = value_node
                line = key_node.start_mark.line + 1
                break
        else:
            return line
    return line
