"""Differential checking of the two executors: their JSON must be byte-identical.

The test kit turns this on (``GraphQLEngine.compare_executors``) so every query
a test sends runs through the planned executor and Tartiflette's, and any
difference fails with both answers side by side.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Mapping

# Object addresses in messages (``<built-in method items of dict object at
# 0x7f...>``) differ between two runs that build fresh objects.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


class ExecutorMismatch(AssertionError):
    """The planned executor and Tartiflette's answered one query differently."""


def encode(result: Any) -> str:
    """The JSON text compared: key order matters, as it does on the wire."""
    return json.dumps(result, separators=(",", ":"), default=repr)


def compare_results(planned: Any, reference: Any, *, query: str, variables: Mapping[str, Any] | None) -> None:
    """Raise :class:`ExecutorMismatch` unless both results encode to the same JSON."""
    left, right = encode(planned), encode(reference)
    if left == right or _ADDRESS.sub(" at 0x", left) == _ADDRESS.sub(" at 0x", right):
        return
    diff = "\n".join(
        difflib.unified_diff(
            json.dumps(reference, indent=1, default=repr).splitlines(),
            json.dumps(planned, indent=1, default=repr).splitlines(),
            "tartiflette",
            "planned",
            lineterm="",
        )
    )
    raise ExecutorMismatch(
        f"planned executor differs from Tartiflette's\nquery: {query}\nvariables: {variables!r}\n"
        f"planned:     {left[:2000]}\ntartiflette: {right[:2000]}\n{diff[:6000]}"
    )
