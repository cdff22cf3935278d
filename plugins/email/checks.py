"""Start-up checks the attrs class cannot make: the mailer service, agreement with
``email.provider`` and the jobs plugin, unsubscribe lists and DKIM coverage."""

from __future__ import annotations

from typing import Any

from plugboard import keys
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.plugins.email.config import EmailConfig
from plugboard.plugins.email.templates import TRANSACTIONAL


def check_config(app: Any, config: EmailConfig) -> Any:
    """Raise one ConfigError listing every problem; return the DKIM signer (or None)."""
    settings = app[keys.SETTINGS]
    services = app[keys.SERVICES]
    problems: list[ConfigProblem] = []

    def problem(key: str, value: Any, reason: str) -> None:
        problems.append(ConfigProblem(key, value, reason, settings.source(key)))

    try:
        services.require("mailer", config.mailer, key="email.mailer", source=settings.source("email.mailer"))
    except ConfigError as e:
        problems.extend(e.problems)
    else:
        selected = services.provider("mailer", config.mailer)
        if config.provider is not None and config.provider != selected:
            where = "services.mailer" if config.mailer == "default" else f"services.mailer.{config.mailer}"
            problem(
                "email.provider", config.provider,
                f"the mailer service {config.mailer!r} uses the {selected!r} provider; email.provider must agree. "
                f"Select the provider once, as {where}.provider (EMAIL_PROVIDER sets services.mailer.provider), and drop email.provider",
            )
    jobs = app[keys.PLUGIN_CONFIGS].get("jobs")
    if jobs is not None and jobs.jobs.email and jobs.email.mailer != config.mailer:
        problem("jobs.email.mailer", jobs.email.mailer,
                f"send-email must use the email plugin's mailer service {config.mailer!r} (email.mailer): one set of mail settings")
    if config.ledger == "redis" and not app[keys.CORE_CONFIG].redis.url:
        problem("email.ledger", config.ledger, "the redis ledger needs Redis: set redis.url (or REDIS_URL)")
    for i, name in enumerate(config.unsubscribe.templates):
        if name in TRANSACTIONAL:
            problem(f"email.unsubscribe.templates[{i}]", name, "password-reset and verification are transactional: they never carry List-Unsubscribe")
    if config.path != "/" + config.path.strip("/") or not config.path.strip("/"):
        problem("email.path", config.path, "expected a path such as /email")
    signer = None
    if config.dkim.private_key_file:
        from plugboard.plugins.email.dkim import DkimSigner

        try:
            signer = DkimSigner.from_config(config.dkim, settings.root)
        except ValueError as e:
            problem("email.dkim", "...", str(e))
        else:
            covered = {h.lower() for h in config.dkim.headers}
            missing = [h for h in ("List-Unsubscribe", "List-Unsubscribe-Post") if h.lower() not in covered]
            if config.features.unsubscribe and missing:
                problem("email.dkim.headers", config.dkim.headers,
                        f"DKIM signing would not cover {', '.join(missing)}: RFC 8058 one-click unsubscribe needs both in h= (add them)")
    elif config.dkim.selector or config.dkim.domain:
        problem("email.dkim.private_key_file", None, "DKIM needs the private key file (selector and domain are set)")
    if problems:
        raise ConfigError(problems)
    return signer
