"""``plugboard init`` and ``plugboard new-plugin``: start a project or a plugin package.

Templates are plain files under ``templates/`` (shipped as package data) filled
in with :class:`string.Template`, so each reads as the file it becomes; ``$$``
in a template is a literal ``$``. Neither command overwrites anything unless
``force`` is set, and every check runs before the first write, so a refusal
leaves the folder exactly as it was.
"""

from __future__ import annotations

import re
import string
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import attrs

if TYPE_CHECKING:
    from plugboard.scaffold.features import Feature

EXIT_OK = 0
EXIT_USAGE = 2

#: What ``plugboard init`` writes: path in the project -> template name.
PROJECT_FILES: Mapping[str, str] = {
    "settings.yaml": "settings.yaml",
    "schema.d/README.txt": "schema_d_README.txt",
    "config/production.yaml": "production.yaml",
    ".gitignore": "gitignore.txt",
}

_DIST_PREFIX = "plugboard-"
# After the prefix is stripped: starts with a letter (it also begins a GraphQL
# field name), single separators between words, no trailing separator.
_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
# Top-level settings keys the core owns: a plugin's section must not collide.
# Spelled out rather than read from plugboard.core_config, which imports the
# whole provider stack; tests/core/test_scaffold.py keeps the two in step.
RESERVED_NAMES = frozenset({"server", "graphql", "records", "redis", "plugins", "env_aliases", "plugboard"})


@attrs.define(frozen=True, kw_only=True)
class PluginNames:
    """Every spelling of one plugin's name, derived from what the user typed."""

    #: Entry-point name, settings section and ``PLUGIN_CONFIGS`` key: ``book_reviews``.
    name: str
    #: Distribution and folder name: ``plugboard-book-reviews``.
    dist: str
    #: Import package: ``plugboard_book_reviews``.
    module: str
    #: Config class: ``BookReviewsConfig``.
    config_class: str
    #: The example query field: ``bookReviewsHello``.
    field: str

    def template_values(self) -> dict[str, str]:
        return attrs.asdict(self)


def plugin_names(raw: str) -> PluginNames:
    """Validate a ``new-plugin`` NAME and derive the other spellings; ValueError if bad."""
    base = raw
    for prefix in ("plugboard-", "plugboard_"):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    if not _NAME_RE.fullmatch(base):
        raise ValueError(
            f"invalid plugin name {raw!r}: use lowercase letters, digits, '-' or '_', "
            "starting with a letter (e.g. 'reviews' or 'plugboard-reviews')"
        )
    # One spelling for the settings section: `book-reviews:` would need a
    # PLUGBOARD_BOOK-REVIEWS__... environment variable, which shells reject.
    name = base.replace("-", "_")
    if name in RESERVED_NAMES:
        raise ValueError(f"invalid plugin name {raw!r}: {name!r} is a settings section the core reserves")
    words = name.split("_")
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    return PluginNames(
        name=name,
        dist=_DIST_PREFIX + name.replace("_", "-"),
        module="plugboard_" + name,
        config_class="".join(w.capitalize() for w in words) + "Config",
        field=camel + "Hello",
    )


def _template(name: str) -> str:
    return (files("plugboard.scaffold") / "templates" / name).read_text(encoding="utf-8")


def _render(name: str, values: Mapping[str, str]) -> str:
    # substitute(), not safe_substitute(): a template naming an unknown value
    # is a bug here, not text to pass through.
    return string.Template(_template(name)).substitute(values)


def _fail(message: str) -> int:
    print(f"plugboard: {message}", file=sys.stderr)
    return EXIT_USAGE


def _write_all(root: Path, contents: Mapping[str, str]) -> None:
    for rel, text in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _listing(contents: Mapping[str, str]) -> str:
    return "\n".join(f"  {rel}" for rel in contents)


def init_project(dir: Path, force: bool = False, features: "list[Feature] | None" = None) -> int:
    """Write settings.yaml, schema.d/, config/production.yaml and .gitignore into ``dir``.

    With ``features`` (see :mod:`plugboard.scaffold.features`), settings.yaml
    declares their plugins and carries their commented defaults, and
    ``.env.example`` lists the seed's environment variables for them.

    :returns: 0, or 2 when ``dir`` is not a folder or a file would be
        overwritten without ``force`` (nothing is written then).
    """
    from plugboard.scaffold.features import env_example, plugins_block, settings_sections

    root = Path(dir)
    if root.exists() and not root.is_dir():
        return _fail(f"{root} exists and is not a folder")
    files_ = dict(PROJECT_FILES)
    if features:
        files_[".env.example"] = ""
    existing = [rel for rel in files_ if (root / rel).exists()]
    if existing and not force:
        return _fail(f"not overwriting {', '.join(existing)} in {root} (use --force to replace them)")
    contents = {rel: _template(template) for rel, template in PROJECT_FILES.items()}
    missing: list[str] = []
    if features:
        from plugboard.pluginmanager import installed_plugins

        installed = set(installed_plugins())
        missing = [f.plugin for f in features if f.plugin not in installed]
        text = contents["settings.yaml"].replace("plugins: []\n", plugins_block(features, installed), 1)
        marker = "# The seed's plain environment variable names"
        text = text.replace(marker, settings_sections(features, text) + "\n" + marker, 1)
        contents["settings.yaml"] = text
        contents[".env.example"] = env_example(features)
    try:
        _write_all(root, contents)
    except OSError as e:
        return _fail(f"could not write the project in {root}: {e}")
    print(f"Created a Plugboard project in {root.resolve()}:\n{_listing(contents)}")
    where = "" if root.resolve() == Path.cwd().resolve() else f" --root {root}"
    if features:
        extras = sorted({e for f in features for e in f.extras})
        if extras:
            print(f"\nOptional providers (S3, GCS, images, email ...): pip install 'plugboard[{','.join(extras)}]'")
        if missing:
            print(f"Not installed yet, so commented out under `plugins:`: {', '.join(missing)}")
        print(f"\nReview settings.yaml and .env.example, then run:\n  plugboard check{where}\n  plugboard serve{where}")
    else:
        print(f"\nList plugins under `plugins:` in settings.yaml, then run:\n  plugboard serve{where}")
    return EXIT_OK


def new_plugin(name: str, dir: Path, force: bool = False) -> int:
    """Write a pip-installable plugin package ``plugboard-<name>/`` into ``dir``.

    With ``force`` the generated files replace those of an existing folder;
    other files in it are left alone.

    :returns: 0, or 2 for a bad name or an existing folder without ``force``.
    """
    try:
        names = plugin_names(name)
    except ValueError as e:
        return _fail(str(e))
    target = Path(dir) / names.dist
    if target.exists() and not target.is_dir():
        return _fail(f"{target} exists and is not a folder")
    if target.exists() and not force:
        return _fail(f"not overwriting the existing folder {target} (use --force to replace its files)")
    values = names.template_values()
    m = names.module
    # Everything is rendered before anything is written, so a template
    # problem cannot leave half a package behind.
    contents = {
        "pyproject.toml": _render("plugin_pyproject.toml.txt", values),
        "README.md": _render("plugin_README.md.txt", values),
        f"{m}/__init__.py": _render("plugin_init.py.txt", values),
        f"{m}/config.py": _render("plugin_config.py.txt", values),
        f"{m}/resolvers.py": _render("plugin_resolvers.py.txt", values),
        f"{m}/schema.graphql": _render("plugin_schema.graphql.txt", values),
        f"tests/test_{names.name}.py": _render("plugin_test.py.txt", values),
    }
    try:
        _write_all(target, contents)
    except OSError as e:
        return _fail(f"could not write the plugin package in {target}: {e}")
    print(f"Created the plugin package {names.dist} in {target.resolve()}:\n{_listing(contents)}")
    print(
        f"\nIts plugin name is {names.name!r} (entry point group plugboard.plugins). Next:\n"
        f"  pip install -e {target}\n"
        f"  add `- {names.name}` under `plugins:` in settings.yaml, then: plugboard check"
    )
    return EXIT_OK
