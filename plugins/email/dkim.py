"""DKIM signing with dkimpy (``email.dkim``): relaxed/relaxed, ``h=`` from the settings.

The signed bytes are parsed back into the message the mailer sends; relaxed
canonicalisation keeps the signature valid through the mailer's re-serialisation.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs


@attrs.define(frozen=True)
class DkimSigner:
    selector: bytes
    domain: bytes
    key: bytes
    algorithm: bytes
    headers: tuple[bytes, ...]

    @classmethod
    def from_config(cls, config: Any, root: Path) -> "DkimSigner":
        if not config.selector or not config.domain:
            raise ValueError("DKIM needs selector and domain beside private_key_file")
        path = root / config.private_key_file
        try:
            key = path.read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read the DKIM private key {path}: {e}") from None
        if b"PRIVATE KEY" not in key:
            raise ValueError(f"{path} is not a PEM private key")
        headers = tuple(h.encode() for h in dict.fromkeys(["From", *config.headers]))
        return cls(config.selector.encode(), config.domain.encode(), key, config.algorithm.encode(), headers)

    def sign(self, message: EmailMessage) -> EmailMessage:
        import dkim

        data = message.as_bytes(policy=email.policy.SMTP)
        present = {k.lower() for k in message.keys()}
        include = [h for h in self.headers if h.decode().lower() in present]
        signature = dkim.sign(
            data, self.selector, self.domain, self.key,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=self.algorithm, include_headers=include,
        )
        return email.message_from_bytes(signature + data, policy=email.policy.SMTP)
