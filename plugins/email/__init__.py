"""Email: templates (MJML + sandboxed Jinja2), queued sending, bounces and suppression,
RFC 8058 one-click unsubscribe, DKIM, analytics; the sendgrid, mailgun and ses mailers.

The hook implementations are thin; the work lives in ``config`` (settings),
``service`` (``app[EMAIL]``: send, templates, suppression, events), ``templates``
(rendering), ``graphql`` (SDL in ``schema.graphql``), ``routes`` (unsubscribe,
webhooks, tracking), ``webhooks`` (signature checks and the event model),
``dkim`` and ``providers/`` (one mailer per module). The mailer itself is the
core's ``services.mailer``; ``email.mailer`` names the service to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugboard import hookimpl
from plugboard.plugins.email.config import EmailConfig


@hookimpl
def plugboard_metrics(app: Any, registry: Any) -> Any:
    from plugboard.plugins.email.prometheus import register

    return register(app, registry)


@hookimpl
def plugboard_config_class() -> type:
    return EmailConfig


@hookimpl
def plugboard_providers() -> list:
    from plugboard.plugins.email.providers import provider_specs

    return provider_specs()


@hookimpl
def plugboard_configure(app: Any, config: EmailConfig) -> None:
    from plugboard.plugins.email.checks import check_config
    from plugboard.plugins.email.keys import EMAIL
    from plugboard.plugins.email.service import EmailService

    dkim = check_config(app, config)
    service = EmailService(app, config)
    service.dkim = dkim
    app[EMAIL] = service
    from plugboard.plugins.jobs.keys import SEND_GUARD

    app[SEND_GUARD] = service


@hookimpl
def plugboard_schema(config: EmailConfig) -> str:
    return Path(__file__).with_name("schema.graphql").read_text(encoding="utf-8")


@hookimpl
def plugboard_resolvers(config: EmailConfig) -> dict[str, Any]:
    from plugboard.plugins.email.graphql import RESOLVERS

    return dict(RESOLVERS)


@hookimpl
def plugboard_subscriptions(config: EmailConfig) -> dict[str, Any]:
    from plugboard.plugins.email.graphql import SUBSCRIPTIONS

    return dict(SUBSCRIPTIONS)


@hookimpl
def plugboard_tables(metadata: Any, config: EmailConfig) -> None:
    from plugboard.plugins.email.store import define_tables

    define_tables(metadata)


@hookimpl
def plugboard_routes(app: Any, config: EmailConfig) -> list[Any]:
    from plugboard.plugins.email.routes import routes

    return routes(config)


@hookimpl
async def plugboard_startup(app: Any, config: EmailConfig) -> None:
    import asyncio

    from plugboard.plugins.email.keys import EMAIL

    app[EMAIL].start()
    # Reads and checks every file template: a broken override stops start-up.
    await asyncio.to_thread(app[EMAIL].load_file_templates)
