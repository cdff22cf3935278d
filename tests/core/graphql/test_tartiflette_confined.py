"""Tartiflette is imported by the engine's modules and nowhere else in the product.

Plugins and operation steps see Plugboard's own types (the document view,
plain-data resolver maps); only the engine knows Tartiflette, so a change of
engine touches these files: ``engine.py``, ``parsed.py`` (a parsed
document and its views, built from Tartiflette's AST) and the planned
executor, which walks Tartiflette's schema and AST (``plan.py``, ``planned.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ALLOWED = {
    Path("core/graphql/engine.py"),
    Path("core/graphql/parsed.py"),
    Path("core/graphql/plan.py"),
    Path("core/graphql/planned.py"),
}


def tartiflette_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("import_module", "__import__"):
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        else:
            continue
        if any(n == "tartiflette" or n.startswith("tartiflette.") for n in names):
            lines.append(node.lineno)
    return lines


def test_only_the_engine_imports_tartiflette():
    offenders = []
    for folder in ("core", "plugins", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in ALLOWED or ".venv" in relative.parts:
                continue
            offenders += [f"{relative}:{line}" for line in tartiflette_imports(path)]
    assert offenders == [], "Tartiflette imported outside the engine's modules"


def test_the_engine_does_import_it():
    # Guards the walk above against silently finding no files.
    assert tartiflette_imports(ROOT / "core/graphql/engine.py")
