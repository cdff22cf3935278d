"""What ``plugboard check`` reports about a built app: plugins, providers, services.

One :func:`report` (plain data, also what ``--json`` prints) and the text
renderings of it, sized for a 100-column terminal: the table shows counts,
``--verbose`` and ``--fields PLUGIN`` list hooks and schema fields.

A plugin's providers are those it declares (``plugboard_providers``) and
those its settings select: a config field named after a provider kind
(``jobs.broker``), or the end of one (``jobs.store`` for ``jobstore``, resolved
through a ``store_name`` attribute when the setting is ``auto``-like). A field
named after a service kind (``realtime.pubsub``) means the plugin uses that
shared service, the ``default`` one when the field is unset.
"""

from __future__ import annotations

import textwrap
from typing import Any

WIDTH = 100


def report(app: Any) -> dict[str, Any]:
    """Everything ``check`` prints, as JSON-ready data."""
    from plugboard import __version__, keys
    from plugboard.cors import describe as describe_cors
    from plugboard.providers.registry import KINDS
    from plugboard.transports.inspect import describe

    registry = app[keys.PROVIDERS]
    services = app[keys.SERVICES]
    configs = app[keys.PLUGIN_CONFIGS]
    declared: dict[str, dict[str, list[str]]] = {}
    for spec, plugin in registry.specs():
        declared.setdefault(plugin, {}).setdefault(spec.kind, []).append(spec.name)
    plugins = []
    for plugin in describe(app)["plugins"]:
        name = plugin["name"]
        offers = {kind: sorted(names) for kind, names in sorted(declared.get(name, {}).items())}
        selects = _selections(configs.get(name), offers, KINDS, services)
        if name == "core":
            selects = {f"{d.kind}.{d.name}" if d.name != "default" else d.kind: d.provider for d in services.declared()}
        plugins.append(
            {
                "name": name,
                "version": plugin["version"],
                "hooks": [h.removeprefix("plugboard_") for h in plugin["hooks"]],
                "providers": {"selects": selects, "declares": offers},
                "fields": list(plugin["contributes"].get("fields", [])),
            }
        )
    return {
        "plugboard": __version__,
        "plugins": plugins,
        "services": [{"key": d.key, "kind": d.kind, "name": d.name, "provider": d.provider} for d in services.declared()],
        "schema_fields": len(app[keys.COMPOSED_SCHEMA].field_owners),
        "cors": describe_cors(app[keys.CORE_CONFIG].server.cors),
    }


def _selections(config: Any, offers: dict[str, list[str]], kinds: dict[str, Any], services: Any) -> dict[str, str]:
    if config is None:
        return {}
    out: dict[str, str] = {}
    for field in getattr(type(config), "__attrs_attrs__", ()):
        value = getattr(config, field.name)
        kind = next((k for k in kinds if k == field.name or (k in offers and k.endswith(field.name))), None)
        if kind is None:
            if (field.name == "provider" or field.name.endswith("_provider")) and isinstance(value, str):
                out[field.name] = value
            continue
        if kinds[kind].service:
            service = value if isinstance(value, str) and value in services.names(kind) else "default"
            provider = services.provider(kind, service)
            if provider is not None:
                out[kind] = provider
            continue
        if isinstance(value, str) and value not in offers.get(kind, [value]):
            resolved = getattr(config, f"{field.name}_name", None)
            resolved = resolved() if callable(resolved) else resolved
            value = resolved if isinstance(resolved, str) else value
        if isinstance(value, str):
            out[kind] = value
    return out


def providers_cell(plugin: dict[str, Any]) -> str:
    """``broker=memory, jobstore=records``; a kind only declared shows its names."""
    selects, declares = plugin["providers"]["selects"], plugin["providers"]["declares"]
    parts = [f"{kind}={name}" for kind, name in selects.items()]
    parts += [f"{kind}: {'|'.join(names)}" for kind, names in declares.items() if kind not in selects]
    return ", ".join(parts) or "-"


def table(data: dict[str, Any]) -> list[str]:
    """The plugin table: counts, fitting :data:`WIDTH` columns."""
    header = ("plugin", "version", "hooks", "fields", "providers")
    rows = [
        (p["name"], p["version"] or "-", str(len(p["hooks"])), str(len(p["fields"])), providers_cell(p))
        for p in data["plugins"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    room = max(20, WIDTH - sum(widths) - 2 * (len(header) - 1))
    lines = []
    divider = tuple("-" * w for w in [*widths, len(header[-1])])
    for row in [header, divider, *rows]:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
        wrapped = textwrap.wrap(row[-1], room, break_on_hyphens=False) or [""]
        lines.append(f"{head}  {wrapped[0]}".rstrip())
        lines += [f"{' ' * (len(head) + 2)}{more}" for more in wrapped[1:]]
    return lines


def listing(plugin: dict[str, Any]) -> list[str]:
    """One plugin's hooks, providers and schema fields, wrapped to :data:`WIDTH`."""
    indent = "    "
    out = [f"{plugin['name']} {plugin['version'] or ''}".rstrip()]
    for label, items in (
        ("hooks", plugin["hooks"]),
        ("providers", [providers_cell(plugin)] if providers_cell(plugin) != "-" else []),
        ("schema fields", plugin["fields"]),
    ):
        out.append(f"  {label} ({len(items)}):" if label != "providers" else f"  {label}:")
        text = ", ".join(items) or "-"
        out += textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
    return out


def wrap(lines: list[str]) -> list[str]:
    """Lines longer than :data:`WIDTH` continued on indented lines."""
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out += textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False) or [""]
    return out
