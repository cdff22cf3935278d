"""The ``ses`` mailer: Amazon SES v2 ``SendEmail`` with raw MIME content (aiobotocore).

Raw content keeps the message as built (Message-ID, List-Unsubscribe, a DKIM
signature). The template travels as the ``plugboard_template`` email tag, which
SES event publishing echoes in ``mail.tags``. Throttling, 5xx answers and
connection trouble are temporary; other client errors (a sender not verified,
a rejected message, bad credentials) are permanent.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
from email.message import EmailMessage
from typing import Any, Iterable

from plugboard.providers.mailer import MailerError, SendResult, recipients
from plugboard.plugins.email.providers.config import SesConfig

_TEMPORARY_CODES = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException", "SendingPausedException", "ServiceUnavailable", "InternalFailure"}
_TAG = re.compile(r"[^A-Za-z0-9_-]")


class SesMailer:
    def __init__(self, config: SesConfig) -> None:
        self.config = config
        self._client: Any = None
        self._context: Any = None

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        c = self.config
        kwargs: dict[str, Any] = {"region_name": c.region}
        if c.endpoint_url:
            kwargs["endpoint_url"] = c.endpoint_url
        if c.access_key_id:
            kwargs["aws_access_key_id"] = c.access_key_id
            kwargs["aws_secret_access_key"] = c.secret_access_key
        config = AioConfig(connect_timeout=min(c.timeout, 10), read_timeout=c.timeout, retries={"max_attempts": 1})
        self._context = get_session().create_client("sesv2", config=config, **kwargs)
        self._client = await self._context.__aenter__()

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._context = self._client = None

    async def check(self) -> None:
        if self._client is None:
            raise MailerError("the ses mailer is not started", permanent=False)

    async def send(self, message: EmailMessage, *, bcc: Iterable[str] = ()) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self._client is None:
            raise MailerError("the ses mailer is not started", permanent=False)
        bcc = list(bcc)
        to = recipients(message, bcc)
        request: dict[str, Any] = {
            "FromEmailAddress": str(message["From"]),
            "Destination": {"ToAddresses": recipients(message)} | ({"BccAddresses": recipients(EmailMessage(), bcc)} if bcc else {}),
            "Content": {"Raw": {"Data": message.as_bytes(policy=email.policy.SMTP)}},
        }
        template = message.get("X-Plugboard-Template")
        if template:
            request["EmailTags"] = [{"Name": "plugboard_template", "Value": _TAG.sub("_", str(template))[:256]}]
        if self.config.configuration_set:
            request["ConfigurationSetName"] = self.config.configuration_set
        try:
            await self._client.send_email(**request)
        except ClientError as e:
            error = e.response.get("Error", {})
            code = error.get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
            temporary = code in _TEMPORARY_CODES or status >= 500 or status == 429
            raise MailerError(f"SES answered {status} {code}: {error.get('Message', '')}", permanent=not temporary) from e
        except NoCredentialsError as e:
            raise MailerError(f"SES: no AWS credentials: {e}", permanent=True) from e
        except (BotoCoreError, asyncio.TimeoutError, OSError) as e:
            raise MailerError(f"cannot reach SES: {type(e).__name__}: {e}", permanent=False) from e
        return SendResult(message_id=str(message["Message-ID"]), accepted=to)
