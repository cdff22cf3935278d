"""``email:`` settings: the seed's ``EmailConfig``, checked by attrs.

::

    email:
      mailer: default            # a service of services.mailer (its provider: outbox, smtp, sendgrid, mailgun, ses)
      provider: null             # the seed's EmailConfig.provider: if set, must be the provider of that service
      from_address: "Plugboard <noreply@localhost>"
      public_url: http://127.0.0.1:8000   # where unsubscribe, tracking and webhook URLs point
      templates: {welcome: true, password_reset: true, verification: true, order_confirmation: true, newsletter: true}
      templates_dir: null        # .mjml files here override the built-in ones (base.mjml included)
      features: {bounce: true, unsubscribe: true, analytics: false}

The mailer itself (provider, host, keys) is the core's ``services.mailer``
section; the seed's ``EMAIL_PROVIDER``, ``SMTP_*``, ``SENDGRID_API_KEY`` and
``MAILGUN_*`` variables are aliases of its keys (settings.yaml ``env_aliases``).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Secret, Size


def _address(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if "@" not in value or "\n" in value or "\r" in value:
        raise ValueError("expected an email address such as 'Name <noreply@example.com>'")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError("must be 0 or more")


def _url(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith(("http://", "https://")) or any(c in value for c in " \r\n"):
        raise ValueError("expected an http(s) URL such as https://api.example.com")


@attrs.define(frozen=True, kw_only=True)
class TemplatesSwitch:
    """The built-in templates, each switchable (the seed's ``templates``)."""

    welcome: bool = True
    password_reset: bool = True
    verification: bool = True
    order_confirmation: bool = True
    newsletter: bool = True


@attrs.define(frozen=True, kw_only=True)
class Features:
    """The seed's ``features``."""

    #: Signed provider webhooks: bounces and complaints fill the suppression list.
    bounce: bool = True
    #: RFC 8058 one-click unsubscribe on non-transactional templates.
    unsubscribe: bool = True
    #: Counts per template and day; ``emailStats`` and ``emailEvents``.
    analytics: bool = False


@attrs.define(frozen=True, kw_only=True)
class Tracking:
    """Open pixel and click redirects (``features.analytics``); off by default: they tell
    the sender when and where a recipient read the message, and rewrite every link."""

    opens: bool = False
    clicks: bool = False


@attrs.define(frozen=True, kw_only=True)
class Unsubscribe:
    """RFC 8058 / RFC 2369 ``List-Unsubscribe``."""

    #: Templates that carry ``List-Unsubscribe`` (transactional ones never do).
    templates: list[str] = attrs.field(factory=lambda: ["newsletter"])
    #: The ``mailto:`` alternative (RFC 2369); null: none.
    mailto: str | None = None
    #: Unsubscribe tokens older than this are refused (0: never expire).
    token_max_age: Duration = attrs.field(default=0.0, validator=_non_negative)


@attrs.define(frozen=True, kw_only=True)
class Dkim:
    """DKIM signing (dkimpy); on when ``private_key_file`` is set.

    The key file is read again when it changes (replace it atomically, with its
    DNS record, to rotate under the same selector); a new selector is a restart."""

    selector: str | None = None
    domain: str | None = None
    #: PEM private key (RSA, or Ed25519 with ``algorithm: ed25519-sha256``).
    private_key_file: str | None = None
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    #: Headers ``h=`` covers; From is always signed.
    headers: list[str] = attrs.field(
        factory=lambda: ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
                         "List-Unsubscribe", "List-Unsubscribe-Post"]
    )


@attrs.define(frozen=True, kw_only=True)
class Webhooks:
    """Verification material for the providers' event webhooks (``features.bounce``)."""

    #: SendGrid Event Webhook verification key (base64 DER of the ECDSA P-256 public key).
    sendgrid_public_key: str | None = None
    #: Mailgun's HTTP webhook signing key.
    mailgun_signing_key: Secret | None = None
    #: SNS topic ARNs whose messages are accepted; required for the SES webhook
    #: (empty: it refuses everything, as SNS signs any account's topic alike).
    ses_topic_arns: list[str] = attrs.field(factory=list)
    #: Hosts ``SigningCertURL`` may point at (a regex, full match).
    ses_cert_host: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    #: A CA bundle that signing certificates must chain to (null: the system's).
    ses_ca_file: str | None = None
    #: Signatures older than this are refused (replay window).
    max_age: Duration = attrs.field(default=300.0, validator=validators.positive)


@attrs.define(frozen=True, kw_only=True)
class EmailConfig:
    """The ``email`` section (see the module docstring)."""

    #: The mailer service (``services.mailer``) that sends.
    mailer: str = "default"
    #: The seed's ``EmailConfig.provider``: when set, the provider that service must use.
    provider: Literal["outbox", "smtp", "sendgrid", "mailgun", "ses"] | None = None
    from_address: str = attrs.field(default="Plugboard <noreply@localhost>", validator=_address)
    #: The public base URL of this server (unsubscribe, tracking links).
    public_url: str = attrs.field(default="http://127.0.0.1:8000", validator=_url)
    #: Route prefix of the unsubscribe, tracking and webhook endpoints.
    path: str = "/email"
    templates: TemplatesSwitch = attrs.Factory(TemplatesSwitch)
    #: Folder of ``<name>.mjml`` files overriding or adding built-in templates (relative: project root).
    templates_dir: str | None = None
    features: Features = attrs.Factory(Features)
    tracking: Tracking = attrs.Factory(Tracking)
    unsubscribe: Unsubscribe = attrs.Factory(Unsubscribe)
    dkim: Dkim = attrs.Factory(Dkim)
    webhooks: Webhooks = attrs.Factory(Webhooks)
    #: Who may call ``sendEmail``: admins only, or any signed-in identity.
    send_access: Literal["admin", "authenticated"] = "admin"
    #: Without the jobs plugin a send happens in the request, within this time.
    send_timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
    #: Rendering one template may take this long (runaway loops are stopped).
    render_timeout: Duration = attrs.field(default=2.0, validator=validators.positive)
    #: The JSON of ``variables`` may be this large.
    max_variables_size: Size = attrs.field(default=65536, validator=validators.positive)
    #: A template's source may be this large.
    max_template_size: Size = attrs.field(default=200_000, validator=validators.positive)
    #: Messages to one address per ``rate_window`` (0: no cap).
    per_recipient_limit: int = attrs.field(default=20, validator=_non_negative)
    rate_window: Duration = attrs.field(default=3600.0, validator=validators.positive)
    #: Where the per-message ledger (idempotency keys, per-recipient counts) lives:
    #: ``auto`` (Redis when ``redis.url`` is set, else the records store) | ``records`` | ``redis``.
    ledger: Literal["auto", "records", "redis"] = "auto"
    #: How long ledger entries are kept in Redis (a key reused later sends again).
    ledger_retention: Duration = attrs.field(default=7 * 86400.0, validator=validators.positive)
    #: How long one send attempt holds a message (its mailer call is cut off after this).
    #: A claim older than this belongs to a worker that died mid-send: the job's next
    #: delivery sends again (same Message-ID). 0: never (at most once; such a job fails).
    send_lease: Duration = attrs.field(default=60.0, validator=_non_negative)
    #: Rendered templates kept compiled.
    cache_size: int = attrs.field(default=256, validator=validators.positive)
    #: Signs unsubscribe and tracking tokens; null: ``server.secret_key``.
    secret: Secret | None = None
