"""attrs validators for config classes, with messages in the settings-error style.

``attrs.field(default=8000, validator=plugboard.validators.port)``: the
message becomes the reason in ``server.port = 70000 (from settings.yaml:3):
expected a port between 0 and 65535``.
"""

from __future__ import annotations

from typing import Any

import attrs


def positive(instance: Any, attribute: attrs.Attribute, value: int | float) -> None:
    """Greater than zero."""
    if value <= 0:
        raise ValueError("expected a positive number")


def non_negative(instance: Any, attribute: attrs.Attribute, value: int | float) -> None:
    """Zero or more (limits where 0 means off)."""
    if value < 0:
        raise ValueError("expected zero or a positive number")


def port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    """A TCP port; 0 lets the OS choose."""
    if not 0 <= value <= 65535:
        raise ValueError("expected a port between 0 and 65535")


def url_path(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    """An absolute URL path such as ``/graphql``."""
    if not value.startswith("/"):
        raise ValueError("expected a path starting with '/'")
