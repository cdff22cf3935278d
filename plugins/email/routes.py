"""HTTP endpoints under ``email.path``: one-click unsubscribe, provider webhooks, tracking.

- ``GET  /email/unsubscribe/{token}``: a confirmation page with a button; never
  unsubscribes by itself (link scanners follow GET links).
- ``POST /email/unsubscribe/{token}``: unsubscribes (RFC 8058: the body is
  ``List-Unsubscribe=One-Click``; no login); idempotent.
- ``POST /email/webhooks/{sendgrid,mailgun,ses}``: signed provider events.
- ``GET  /email/o/{token}.gif`` and ``/email/c/{token}``: open pixel and click
  redirect (``features.analytics`` with ``tracking.opens`` / ``tracking.clicks``).
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from aiohttp import web

from plugboard.plugins.email import webhooks
from plugboard.plugins.email.config import EmailConfig
from plugboard.plugins.email.keys import EMAIL

logger = logging.getLogger("plugboard.email")
MAX_WEBHOOK_BODY = 5 * 1024 * 1024
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>body{{font-family:Helvetica,Arial,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}
button{{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:6px;background:#2563eb;color:#fff;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body), status=status, content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"},
    )


def _token(request: web.Request) -> dict[str, Any] | None:
    service = request.app[EMAIL]
    return service.signer.verify("unsubscribe", request.match_info["token"], max_age=service.config.unsubscribe.token_max_age)


async def unsubscribe_page(request: web.Request) -> web.Response:
    data = _token(request)
    if data is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid. Use the link from the latest email.</p>", 400)
    address, list_name = html.escape(str(data["a"])), html.escape(str(data["l"]))
    return _page(
        "Unsubscribe",
        f"<p>Stop sending <strong>{list_name}</strong> emails to <strong>{address}</strong>?</p>"
        f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>',
    )


async def unsubscribe(request: web.Request) -> web.Response:
    data = _token(request)
    if data is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 400)
    service = request.app[EMAIL]
    address, list_name = str(data["a"]), str(data["l"])
    if await service.suppress(address, list_name, "unsubscribe"):
        await service.record_event("plugboard", "unsubscribed", address=address, template=list_name, detail="one-click")
    return _page("Unsubscribed", f"<p>{html.escape(address)} will get no more <strong>{html.escape(list_name)}</strong> emails.</p>")


async def _record(request: web.Request, provider: str, events: list[webhooks.Event]) -> web.Response:
    service = request.app[EMAIL]
    for event in events:
        await service.record_event(provider, event.event, address=event.address, message_id=event.message_id,
                                   template=event.template, detail=event.detail, at=event.at)
    return web.json_response({"recorded": len(events)})


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_WEBHOOK_BODY, actual_size=request.content_length)
    return await request.read()


def _rejected(provider: str, e: Exception) -> web.Response:
    logger.warning("email webhook %s refused: %s", provider, e)
    return web.json_response({"error": str(e)}, status=401)


async def sendgrid_webhook(request: web.Request) -> web.Response:
    service = request.app[EMAIL]
    body = await _body(request)
    try:
        key = webhooks.verify_sendgrid(service.config.webhooks.sendgrid_public_key, request.headers, body, service.config.webhooks.max_age)
        events = webhooks.sendgrid_events(body)
        if await service.seen(key):
            raise webhooks.WebhookRejected("replayed signature")
    except webhooks.WebhookRejected as e:
        return _rejected("sendgrid", e)
    except webhooks.WebhookMalformed as e:
        return web.json_response({"error": str(e)}, status=400)
    return await _record(request, "sendgrid", events)


async def mailgun_webhook(request: web.Request) -> web.Response:
    service = request.app[EMAIL]
    body = await _body(request)
    try:
        try:
            payload = json.loads(body)
        except ValueError:
            raise webhooks.WebhookRejected("not JSON") from None
        key = webhooks.verify_mailgun(service.config.webhooks.mailgun_signing_key, payload, service.config.webhooks.max_age)
        events = webhooks.mailgun_events(payload)
        if await service.seen(key):
            raise webhooks.WebhookRejected("replayed signature")
    except webhooks.WebhookRejected as e:
        return _rejected("mailgun", e)
    except webhooks.WebhookMalformed as e:
        return web.json_response({"error": str(e)}, status=400)
    return await _record(request, "mailgun", events)


async def ses_webhook(request: web.Request) -> web.Response:
    service = request.app[EMAIL]
    body = await _body(request)
    try:
        try:
            message = json.loads(body)
        except ValueError:
            raise webhooks.WebhookRejected("not JSON") from None
        key = await service.sns.verify(message)
        if message.get("Type") == "Notification":
            events = webhooks.ses_events(message)
        else:
            events = []
            if message.get("Type") == "SubscriptionConfirmation":
                webhooks.check_subscribe_url(message, service.config.webhooks.ses_cert_host)
        if await service.seen(key):
            raise webhooks.WebhookRejected("replayed message")
    except webhooks.WebhookRejected as e:
        return _rejected("ses", e)
    except webhooks.WebhookMalformed as e:
        return web.json_response({"error": str(e)}, status=400)
    if message.get("Type") == "SubscriptionConfirmation":
        status = await _confirm(service, message)
        if status != 200:
            return web.json_response({"confirmed": False, "error": f"SubscribeURL answered {status}"}, status=502)
        return web.json_response({"confirmed": True})
    return await _record(request, "ses", events)


async def _confirm(service: Any, message: dict[str, Any]) -> int:
    """Visit SubscribeURL (checked: an SNS host, this topic) so the topic starts delivering; its status (0: unreachable)."""
    import ssl

    import aiohttp

    url = webhooks.check_subscribe_url(message, service.config.webhooks.ses_cert_host)
    ca = service.config.webhooks.ses_ca_file
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url, ssl=context) as response:
                logger.info("SNS subscription confirmation for %s answered %s", message.get("TopicArn"), response.status)
                return response.status
    except (aiohttp.ClientError, TimeoutError) as e:
        logger.warning("SNS subscription confirmation for %s failed: %s: %s", message.get("TopicArn"), type(e).__name__, e)
        return 0


_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


async def open_pixel(request: web.Request) -> web.Response:
    service = request.app[EMAIL]
    data = service.signer.verify("open", request.match_info["token"])
    if data is not None:
        await service.record_event("plugboard", "opened", address=data.get("a"), template=data.get("t"))
    return web.Response(body=_GIF, content_type="image/gif", headers={"Cache-Control": "no-store"})


async def click(request: web.Request) -> web.Response:
    service = request.app[EMAIL]
    data = service.signer.verify("click", request.match_info["token"])
    if data is None or not str(data.get("u", "")).startswith(("http://", "https://")):
        # Never an open redirect: only URLs this server signed.
        return _page("Link not valid", "<p>This link is not valid.</p>", 400)
    await service.record_event("plugboard", "clicked", address=data.get("a"), template=data.get("t"), detail=data["u"])
    raise web.HTTPFound(data["u"])


def routes(config: EmailConfig) -> list[web.RouteDef]:
    base = config.path.rstrip("/")
    out = []
    if config.features.unsubscribe:
        out += [web.get(f"{base}/unsubscribe/{{token}}", unsubscribe_page), web.post(f"{base}/unsubscribe/{{token}}", unsubscribe)]
    if config.features.bounce or config.features.analytics:
        out += [
            web.post(f"{base}/webhooks/sendgrid", sendgrid_webhook),
            web.post(f"{base}/webhooks/mailgun", mailgun_webhook),
            web.post(f"{base}/webhooks/ses", ses_webhook),
        ]
    if config.features.analytics and config.tracking.opens:
        out.append(web.get(f"{base}/o/{{token}}.gif", open_pixel))
    if config.features.analytics and config.tracking.clicks:
        out.append(web.get(f"{base}/c/{{token}}", click))
    return out
