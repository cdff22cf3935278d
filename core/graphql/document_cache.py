"""The engine's cache of parsed and validated documents, bounded by count and by bytes.

Entries are ``ParsedDocument`` objects (:mod:`plugboard.graphql.parsed`): anything with ``errors``
(falsy when the document is usable) and ``weight`` (its estimated size in bytes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class DocumentCache:
    """An LRU of parsed documents bounded by entry count and by estimated bytes.

    Only documents that parsed and validated are kept: a failed one costs its
    sender a parse every time, and cannot fill the memory of the server.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: str) -> Any:
        parsed = self._entries.get(source)
        if parsed is not None:
            self._entries.move_to_end(source)
        return parsed

    def put(self, source: str, parsed: Any) -> None:
        if parsed.errors or source in self._entries:
            return
        weight = parsed.weight
        if weight > self.max_bytes:
            return
        self._entries[source] = parsed
        self.bytes += weight
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.weight

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
