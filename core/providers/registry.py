"""Named provider implementations per kind, one registry per app.

Plugins declare :class:`ProviderSpec` objects through ``plugboard_providers``;
a plugin's settings pick one by name (``uploads.provider: s3``). The factory
is a lazy dotted path, as in fsspec: nothing is imported until selected, and
``requires`` becomes the install hint when that import fails. Providers are
created at start-up inside the app's cleanup context, so nothing starts on a
bad config and teardown runs in reverse order.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from typing import Any, Callable, Iterable, Mapping

import attrs

from plugboard.config import structure
from plugboard.errors import ConfigError, ConfigProblem, ProviderError



@attrs.define(frozen=True)
class Kind:
    """A provider kind the core knows: its Protocol, and whether deployers select it as a service."""

    name: str
    #: ``"module:Protocol"``: the implementer's manual is that Protocol's docstring.
    protocol: str
    #: Selected in a top-level settings section (``storage:``, ``mailer:`` ...) and
    #: shared by every plugin, rather than chosen inside one plugin's section.
    service: bool = False
    #: The provider of the embedded ``default`` service, when some plugin (or
    #: the core) declares a provider of that name; None: no default service.
    default: str | None = None


#: Every provider kind; a ``ProviderSpec`` of any other kind is refused (a typo).
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("storage", "plugboard.providers.storage:Storage", service=True, default="local"),
        Kind("mailer", "plugboard.providers.mailer:Mailer", service=True, default="outbox"),
        Kind("pubsub", "plugboard.providers.pubsub:PubSub", service=True, default="memory"),
        # Their memory providers come with the plugins that use them.
        Kind("cache", "plugboard.providers.cache:Cache", service=True, default="memory"),
        Kind("ratelimit", "plugboard.providers.ratelimit:RateLimitStore", service=True, default="memory"),
        Kind("broker", "plugboard.providers.broker:Broker"),
        Kind("jobstore", "plugboard.providers.jobstore:JobStore"),
    )
}


@attrs.define(frozen=True, kw_only=True)
class ProviderSpec:
    """A named implementation of a provider kind.

    :param kind: one of :data:`KINDS`: ``storage``, ``mailer``, ``cache``,
        ``pubsub``, ``ratelimit`` (services a deployer selects once) or
        ``broker``, ``jobstore`` (selected in the jobs plugin's settings).
    :param name: the name settings use to select it (``s3``).
    :param factory: ``"package.module:Class"``; called as ``factory(config,
        app=app)`` (``app`` only if the callable accepts it).
    :param config: the attrs class validating the provider's own options,
        read from ``<section>.<name>`` (``uploads.s3``), or None.
    :param requires: the pip requirement to name when importing fails; when
        one of plugboard's extras brings it, the hint names that extra
        (``pip install 'plugboard[s3]'``).
    :param description: one line for ``plugboard check``.
    """

    kind: str
    name: str
    factory: str | Callable[..., Any]
    config: type | None = None
    requires: str | None = None
    description: str = ""


@attrs.define
class _Entry:
    spec: ProviderSpec
    plugin: str


class ProviderRegistry:
    """Every declared provider of one app, plus the instances it has created."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], _Entry] = {}
        #: (label, kind, name, instance), in creation order.
        self.created: list[tuple[str, str, str, Any]] = []

    def add(self, spec: ProviderSpec, plugin: str) -> None:
        if spec.kind not in KINDS:
            raise ProviderError(
                f"plugin {plugin!r} declares a provider of unknown kind {spec.kind!r}; kinds: {', '.join(KINDS)}"
            )
        key = (spec.kind, spec.name)
        if key in self._specs:
            other = self._specs[key].plugin
            raise ProviderError(
                f"provider {spec.kind} {spec.name!r} is declared by both plugin {other!r} and plugin {plugin!r}"
            )
        self._specs[key] = _Entry(spec, plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._specs if k == kind)

    def spec(self, kind: str, name: str) -> ProviderSpec:
        try:
            return self._specs[(kind, name)].spec
        except KeyError:
            available = ", ".join(repr(n) for n in self.names(kind)) or "none"
            raise ProviderError(f"unknown {kind} provider {name!r}; available: {available}") from None

    def require(self, kind: str, name: str, *, key: str, source: str) -> ProviderSpec:
        """The spec selected by the setting ``key``, or a ConfigError naming it and the choices.

        For plugin settings that pick a provider by name (``jobs.broker: redis``);
        services are checked by :mod:`plugboard.providers.services`.
        """
        if (kind, name) not in self._specs:
            available = ", ".join(self.names(kind)) or "none"
            raise ConfigError([ConfigProblem(key, name, f"unknown {kind} provider; available: {available}", source)])
        return self._specs[(kind, name)].spec

    def specs(self) -> Iterable[tuple[ProviderSpec, str]]:
        for entry in self._specs.values():
            yield entry.spec, entry.plugin

    def validate(self, kind: str, name: str, options: Mapping[str, Any] | None, *, section: str, source_of: Callable[[str], str]) -> Any:
        """Check a selection and its options without creating anything."""
        spec = self.spec(kind, name)
        if spec.config is None:
            if options:
                raise ConfigError(f"{section}: the {kind} provider {name!r} takes no options")
            return None
        return structure(spec.config, options or {}, section=section, source_of=source_of)

    def load_factory(self, spec: ProviderSpec) -> Callable[..., Any]:
        if callable(spec.factory):
            return spec.factory
        module_name, _, attr = spec.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = f"; install it with: {install_hint(spec.requires)}" if spec.requires else ""
            raise ProviderError(f"{spec.kind} provider {spec.name!r} cannot be imported ({e}){hint}") from e
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ProviderError(f"{spec.kind} provider {spec.name!r}: {module_name} has no {attr!r}") from None

    async def create(self, kind: str, name: str, config: Any, *, app: Any = None, owner: str = "", label: str | None = None) -> Any:
        """Instantiate and start a provider; it is closed by :meth:`close_all`.

        :param owner: who made it (a plugin or settings section), for ``/readyz``.
        :param label: its name in ``/readyz``; default ``owner:kind:name``.
        """
        spec = self.spec(kind, name)
        factory = self.load_factory(spec)
        kwargs = {"app": app} if _accepts(factory, "app") else {}
        instance = factory(config, **kwargs) if spec.config is not None else factory(**kwargs)
        start = getattr(instance, "start", None)
        try:
            if start is not None:
                await start()
            elif hasattr(instance, "__aenter__"):
                await instance.__aenter__()
        except ProviderError:
            raise
        except Exception as e:
            raise ProviderError(f"{kind} provider {name!r} failed to start: {type(e).__name__}: {e}") from e
        self.created.append((label or f"{owner or kind}:{kind}:{name}", kind, name, instance))
        return instance

    async def close_all(self) -> None:
        while self.created:
            _label, _kind, _name, instance = self.created.pop()
            close = getattr(instance, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
            elif hasattr(instance, "__aexit__"):
                await instance.__aexit__(None, None, None)

    async def check_all(self) -> dict[str, str | None]:
        """Ask every created provider that has ``check()``; name -> error or None."""
        out: dict[str, str | None] = {}
        for label, _kind, _name, instance in self.created:
            check = getattr(instance, "check", None)
            if check is None:
                continue
            try:
                await check()
                out[label] = None
            except Exception as e:
                out[label] = f"{type(e).__name__}: {e}"
        return out


def install_hint(requires: str) -> str:
    """``pip install 'plugboard[s3]'`` when an extra of ours brings ``requires``, else ``pip install <requires>``.

    The extras are read from the installed distribution's metadata, so the
    hint follows pyproject.toml; the narrowest extra (fewest requirements) wins.
    """
    wanted = _project_name(requires)
    try:
        lines = importlib.metadata.requires("plugboard") or []
    except importlib.metadata.PackageNotFoundError:
        lines = []
    by_extra: dict[str, list[str]] = {}
    for line in lines:
        requirement, _, marker = line.partition(";")
        match = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if match:
            by_extra.setdefault(match.group(1), []).append(_project_name(requirement))
    # The narrowest extra wins; among equals, the first declared (s3 before ses for aiobotocore).
    extras = sorted((len(names), i, extra) for i, (extra, names) in enumerate(by_extra.items()) if wanted in names and extra != "test")
    if extras:
        return f"pip install 'plugboard[{extras[0][2]}]' (or: pip install {requires})"
    return f"pip install {requires}"


def _project_name(requirement: str) -> str:
    # PEP 503 normalisation of the name before any version, extra or marker.
    name = re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
    try:
        return arg in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
