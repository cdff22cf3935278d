"""Options of the email plugin's mailers, under ``services.mailer`` beside ``provider``."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from plugboard import validators
from plugboard.units import Duration, Secret


def _base_url(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http(s) URL")


@attrs.define(frozen=True, kw_only=True)
class SendgridConfig:
    """``{provider: sendgrid, api_key: ...}`` (``SENDGRID_API_KEY``)."""

    api_key: Secret
    #: The API's base URL (tests point it at a local server).
    base_url: str = attrs.field(default="https://api.sendgrid.com", validator=_base_url)
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
    #: SendGrid's sandbox mode: requests are validated, nothing is delivered.
    sandbox: bool = False


@attrs.define(frozen=True, kw_only=True)
class MailgunConfig:
    """``{provider: mailgun, api_key: ..., domain: mg.example.com, region: us}`` (``MAILGUN_*``)."""

    api_key: Secret
    domain: str
    region: Literal["us", "eu"] = "us"
    #: Overrides the region's base URL (tests point it at a local server).
    base_url: str | None = attrs.field(default=None, validator=_base_url)
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
    #: Mailgun test mode (``o:testmode``): accepted, not delivered.
    test_mode: bool = False

    def url(self) -> str:
        base = self.base_url or ("https://api.eu.mailgun.net" if self.region == "eu" else "https://api.mailgun.net")
        return f"{base.rstrip('/')}/v3/{self.domain}/messages"


@attrs.define(frozen=True, kw_only=True)
class SesConfig:
    """``{provider: ses, region: eu-west-1}``; credentials from the usual AWS chain unless given."""

    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    #: An endpoint other than AWS's (moto, a VPC endpoint).
    endpoint_url: str | None = attrs.field(default=None, validator=_base_url)
    #: SES configuration set (event publishing to SNS for bounces and complaints).
    configuration_set: str | None = None
    timeout: Duration = attrs.field(default=30.0, validator=validators.positive)
