"""Open pixel and signed click redirects (``features.analytics`` with ``tracking.*``).

Off by default: a pixel tells the sender when (and from where) a message was
read, and redirects put this server between the reader and every link. Mail
clients that proxy or prefetch images make open counts approximate.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from plugboard.plugins.email.service import EmailService
    from plugboard.plugins.email.templates import Rendered

_HREF = re.compile(r'href="(https?://[^"]+)"')


def track(service: "EmailService", rendered: "Rendered", address: str, template: str) -> "Rendered":
    html_text = rendered.html
    if service.config.tracking.clicks:
        unsubscribe_prefix = service._url("/unsubscribe/")

        def rewrite(match: re.Match[str]) -> str:
            url = html.unescape(match.group(1))
            if url.startswith(unsubscribe_prefix):
                return match.group(0)
            token = service.signer.sign("click", {"a": address, "t": template, "u": url})
            return f'href="{service._url("/c/" + token)}"'

        html_text = _HREF.sub(rewrite, html_text)
    if service.config.tracking.opens:
        token = service.signer.sign("open", {"a": address, "t": template})
        pixel = f'<img src="{service._url("/o/" + token + ".gif")}" width="1" height="1" alt="" style="display:block;border:0" />'
        html_text = html_text.replace("</body>", pixel + "</body>", 1) if "</body>" in html_text else html_text + pixel
    return attrs.evolve(rendered, html=html_text)
