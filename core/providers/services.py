"""App-wide named services: the storage, mailer, pubsub, cache and rate-limit store a deployer selects once.

As Django's ``STORAGES``/``CACHES``: the ``services:`` settings section
names them per kind, and every plugin uses the services named there instead
of growing settings of its own for the same thing::

    services:
      storage:
        default: {provider: local}
        media: {provider: s3, bucket: my-bucket, region: eu-west-1}
      mailer: {provider: smtp, host: mail.example.com}   # shorthand for {default: {...}}
      pubsub: {provider: redis}

One section for all kinds keeps the top-level names free for the plugins
that build on a kind (the cache plugin's ``cache:``, for instance).

Keys beside ``provider`` are that provider's options, checked by its config
class. A kind with an embedded provider (``storage: local``, ``mailer:
outbox``, ``pubsub: memory``; ``cache``/``ratelimit: memory`` once a plugin
provides them) always has a ``default`` service. Selections
are checked while settings are validated (nothing starts on a bad one),
instances are created once at start-up and closed in reverse order, and
``/readyz`` checks each. A plugin setting that names a service
(``jobs.email.mailer: default``) is checked with :meth:`Services.require`;
the instance comes from :meth:`Services.get`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from plugboard.errors import ConfigError, ConfigProblem, ProviderError
from plugboard.providers.registry import KINDS

if TYPE_CHECKING:
    from plugboard.providers.registry import ProviderRegistry

#: The settings section that declares every service.
SECTION = "services"

#: The service kinds, in start-up order (pubsub first: others may publish).
SERVICE_KINDS = tuple(sorted((k.name for k in KINDS.values() if k.service), key=lambda k: k != "pubsub"))

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@attrs.define(frozen=True, kw_only=True)
class ServiceDecl:
    """One configured service: ``storage.media`` is ``s3`` with these options."""

    kind: str
    name: str
    provider: str
    #: The provider's validated options (an instance of its config class, or None).
    config: Any
    #: The settings key of the service (``services.storage.media``, or ``services.mailer`` in the shorthand).
    key: str


def declare_services(
    section: Mapping[str, Any] | None, registry: "ProviderRegistry", source_of: Callable[[str], str]
) -> tuple[list[ServiceDecl], list[ConfigProblem]]:
    """Every service the ``services:`` section selects, checked against the registry's providers.

    :returns: the declarations and the problems found (all of them, not the first).
    """
    decls: list[ServiceDecl] = []
    problems: list[ConfigProblem] = []
    section = section or {}
    for kind in section:
        if kind not in SERVICE_KINDS:
            key = f"{SECTION}.{kind}"
            problems.append(ConfigProblem(key, "...", f"unknown service kind; expected one of: {', '.join(SERVICE_KINDS)}", source_of(key)))
    for kind in SERVICE_KINDS:
        prefix = f"{SECTION}.{kind}"
        services = section.get(kind) or {}
        if not isinstance(services, Mapping):
            problems.append(ConfigProblem(prefix, services, "expected a mapping such as {provider: NAME}", source_of(prefix)))
            continue
        entries = _entries(prefix, services, source_of, problems)
        default = KINDS[kind].default
        if default in registry.names(kind) and "default" not in entries:
            entries["default"] = (f"{prefix}.default", {"provider": default})
        for name, (key, entry) in entries.items():
            decl = _declare(kind, str(name), key, entry, registry, source_of, problems)
            if decl is not None:
                decls.append(decl)
    return decls, problems


def _entries(
    prefix: str, services: Mapping[str, Any], source_of: Callable[[str], str], problems: list[ConfigProblem]
) -> dict[str, tuple[str, Any]]:
    """One kind's services by name, each with its settings key.

    The shorthand (``mailer: {provider: smtp, host: h}``) is the ``default`` service. Both
    forms can meet in one section when layers write differently: settings.yaml has
    ``storage: {default: {provider: s3}}`` and an environment alias sets
    ``services.storage.bucket``, or the reverse. The shorthand's options then join
    ``default``; an option set in both forms is refused rather than guessed.
    """
    if "provider" in services:
        shorthand = {k: v for k, v in services.items() if k != "default"}
        long_form = services.get("default")
    else:
        shorthand = {k: v for k, v in services.items() if not isinstance(v, Mapping)}
        long_form = services.get("default") if shorthand else None
    if not isinstance(long_form, Mapping):
        if "provider" in services:
            return {"default": (prefix, services)}
        return {name: (f"{prefix}.{name}", value) for name, value in services.items()}
    for option in sorted(shorthand.keys() & long_form.keys()):
        key = f"{prefix}.{option}"
        problems.append(
            ConfigProblem(key, "...", f"also set as {prefix}.default.{option}; set it in one form", source_of(key))
        )
    entries = {name: (f"{prefix}.{name}", value) for name, value in services.items() if isinstance(value, Mapping) and name not in shorthand}
    entries["default"] = (f"{prefix}.default", {**long_form, **shorthand})
    return entries


def _declare(
    kind: str,
    name: str,
    key: str,
    entry: Any,
    registry: "ProviderRegistry",
    source_of: Callable[[str], str],
    problems: list[ConfigProblem],
) -> ServiceDecl | None:
    def problem(at: str, value: Any, reason: str) -> None:
        problems.append(ConfigProblem(at, value, reason, source_of(at)))

    if not _NAME.match(name):
        problem(key, "...", "a service name is lowercase letters, digits, '-' and '_', starting with a letter")
        return None
    if not isinstance(entry, Mapping) or "provider" not in entry:
        example = (registry.names(kind) or ["NAME"])[0]
        problem(key, entry, f"expected a mapping with a provider, such as {{provider: {example}}}")
        return None
    provider = entry["provider"]
    options = {k: v for k, v in entry.items() if k != "provider"}
    if not isinstance(provider, str) or provider not in registry.names(kind):
        available = ", ".join(registry.names(kind)) or "none (enable a plugin that provides one)"
        problem(f"{key}.provider", provider, f"unknown {kind} provider; available: {available}")
        return None
    spec = registry.spec(kind, provider)
    try:
        registry.load_factory(spec)
    except ProviderError as e:
        problem(f"{key}.provider", provider, str(e))
        return None
    try:
        config = registry.validate(kind, provider, options, section=key, source_of=source_of)
    except ConfigError as e:
        problems.extend(e.problems or [ConfigProblem(key, "...", str(e), source_of(key))])
        return None
    return ServiceDecl(kind=kind, name=name, provider=provider, config=config, key=key)


class Services:
    """The app's services: declared from settings, started once, shared by every plugin.

    ``app[plugboard.keys.SERVICES]``. Plugins check the names their settings
    reference in ``plugboard_configure`` (:meth:`require`) and fetch instances
    once the app has started (:meth:`get`).
    """

    def __init__(self, decls: list[ServiceDecl]) -> None:
        self._decls = {(d.kind, d.name): d for d in decls}
        self._instances: dict[tuple[str, str], Any] = {}

    def declared(self) -> list[ServiceDecl]:
        return list(self._decls.values())

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._decls if k == kind)

    def provider(self, kind: str, name: str = "default") -> str | None:
        """The provider a service uses (``local``), or None when it is not declared."""
        decl = self._decls.get((kind, name))
        return decl.provider if decl else None

    def require(self, kind: str, name: str, *, key: str, source: str) -> ServiceDecl:
        """The service a plugin setting (``key``) names, or a ConfigError saying what to write."""
        decl = self._decls.get((kind, name))
        if decl is None:
            configured = ", ".join(self.names(kind)) or "none"
            raise ConfigError(
                [ConfigProblem(key, name, f"no {kind} service of that name (configured: {configured}); declare it under {SECTION}.{kind}", source)]
            )
        return decl

    def get(self, kind: str, name: str = "default") -> Any:
        """The running instance of a service.

        :raises LookupError: not declared, or the app has not started.
        """
        try:
            return self._instances[(kind, name)]
        except KeyError:
            if (kind, name) in self._decls:
                raise LookupError(f"the {kind} service {name!r} is not started (the app is not running)") from None
            configured = ", ".join(self.names(kind)) or "none"
            raise LookupError(f"no {kind} service {name!r} (configured: {configured}); declare it under {SECTION}.{kind}") from None

    async def start(self, registry: "ProviderRegistry", app: Any) -> None:
        """Create and start every service; the registry closes them (reverse order)."""
        for decl in sorted(self._decls.values(), key=lambda d: SERVICE_KINDS.index(d.kind)):
            self._instances[(decl.kind, decl.name)] = await registry.create(
                decl.kind, decl.provider, decl.config, app=app, owner=decl.key, label=f"{decl.kind}.{decl.name}:{decl.provider}"
            )

    def stopped(self) -> None:
        self._instances.clear()
