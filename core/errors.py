"""The one exception hierarchy of Plugboard.

Start-up problems (bad settings, a plugin that will not load, a schema that does
not compose) are user mistakes: the CLI prints them once, without a traceback,
and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Iterable


class PlugboardError(Exception):
    """Base class for every error Plugboard raises on purpose."""


class ConfigProblem:
    """One bad setting: where it is, what it was, why it is wrong, where it came from."""

    __slots__ = ("key", "value", "reason", "source")

    def __init__(self, key: str, value: object, reason: str, source: str = "default") -> None:
        self.key = key
        self.value = value
        self.reason = reason
        self.source = source

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r} (from {self.source}): {self.reason}"

    def __repr__(self) -> str:
        return f"ConfigProblem({str(self)!r})"


class ConfigError(PlugboardError):
    """Settings that cannot run: carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[ConfigProblem] | ConfigProblem | str) -> None:
        if isinstance(problems, (ConfigProblem, str)):
            problems = [problems]
        self.problems = [
            p if isinstance(p, ConfigProblem) else ConfigProblem("settings", None, p, "settings")
            for p in problems
        ]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid settings:\n{lines}")


class PluginLoadError(PlugboardError):
    """A declared plugin could not be found, imported or registered."""


class SchemaError(PlugboardError):
    """The SDL fragments and resolvers of the enabled plugins do not compose."""


class ProviderError(PlugboardError):
    """A provider could not be selected, built or reached."""


class StartupError(PlugboardError):
    """Several start-up problems, reported together."""

    def __init__(self, errors: list[PlugboardError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
