"""DKIM signing with dkimpy (``email.dkim``): relaxed/relaxed, ``h=`` from the settings.

The signed bytes are parsed back into the message the mailer sends; relaxed
canonicalisation keeps the signature valid through the mailer's re-serialisation.

Key rotation: the private key file is read at start-up (a missing or bad file
stops start-up) and read again when it changes (its mtime, size or inode),
checked before each signature, so replacing the key under the same selector
needs no restart. A replacement that cannot be read or is not a PEM private key
(a half-written file) is logged and the last good key keeps signing until the
file is fixed. A new selector or domain is a settings change: restart.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

logger = logging.getLogger("plugboard.email")


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the DKIM private key {path}: {e}") from None
    if b"PRIVATE KEY" not in key:
        raise ValueError(f"{path} is not a PEM private key")
    return key


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class DkimSigner:
    """Signs messages with the key in ``path``, re-read when the file changes."""

    def __init__(self, selector: bytes, domain: bytes, path: Path, algorithm: bytes, headers: tuple[bytes, ...]) -> None:
        self.selector = selector
        self.domain = domain
        self.path = path
        self.algorithm = algorithm
        self.headers = headers
        self._stamp = _stamp(path)
        self.key = _read_key(path)
        #: The stamp of a replacement already found unusable (logged once).
        self._bad: tuple[int, int, int] | None = None

    @classmethod
    def from_config(cls, config: Any, root: Path) -> "DkimSigner":
        if not config.selector or not config.domain:
            raise ValueError("DKIM needs selector and domain beside private_key_file")
        headers = tuple(h.encode() for h in dict.fromkeys(["From", *config.headers]))
        return cls(config.selector.encode(), config.domain.encode(), root / config.private_key_file, config.algorithm.encode(), headers)

    def current_key(self) -> bytes:
        """The key to sign with: the file's, read again if it changed since it was last read."""
        stamp = _stamp(self.path)
        if stamp is not None and stamp != self._stamp and stamp != self._bad:
            try:
                key = _read_key(self.path)
            except ValueError as e:
                self._bad = stamp
                logger.error("email: the DKIM key file changed but %s; signing with the previous key until it is fixed", e)
            else:
                self.key, self._stamp, self._bad = key, stamp, None
                logger.info("email: DKIM key %s re-read (selector %s)", self.path, self.selector.decode())
        return self.key

    def sign(self, message: EmailMessage) -> EmailMessage:
        import dkim

        data = message.as_bytes(policy=email.policy.SMTP)
        present = {k.lower() for k in message.keys()}
        include = [h for h in self.headers if h.decode().lower() in present]
        signature = dkim.sign(
            data, self.selector, self.domain, self.current_key(),
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=self.algorithm, include_headers=include,
        )
        return email.message_from_bytes(signature + data, policy=email.policy.SMTP)
