"""Build multipart/form-data bodies part by part, in any order, streamed from async generators.

``aiohttp.FormData`` cannot stream a generated file without holding it, nor
send deliberately broken bodies, and the multipart tests need both: a 200 MB
file that never exists in memory on the client side, and parts out of the
order the GraphQL multipart request spec requires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterable, AsyncIterator, Callable

BOUNDARY = "plugboard-test-boundary-7f3a"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Part:
    """One form-data part; ``content`` is bytes, a str, or a factory of an async iterable of bytes."""

    name: str | None
    content: bytes | str | Callable[[], AsyncIterable[bytes]]
    filename: str | None = None
    content_type: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()


def field(name: str, value: Any) -> Part:
    """A JSON field such as ``operations`` or ``map`` (strings are sent as they are)."""
    return Part(name, value if isinstance(value, (str, bytes)) else json.dumps(value))


def file(name: str, content: bytes | Callable[[], AsyncIterable[bytes]], filename: str = "f.bin", content_type: str | None = "application/octet-stream") -> Part:
    return Part(name, content, filename=filename, content_type=content_type)


def _headers(part: Part) -> bytes:
    disposition = "form-data"
    if part.name is not None:
        disposition += f'; name="{part.name}"'
    if part.filename is not None:
        disposition += f'; filename="{part.filename}"'
    lines = [f"Content-Disposition: {disposition}"]
    if part.content_type is not None:
        lines.append(f"Content-Type: {part.content_type}")
    lines += [f"{k}: {v}" for k, v in part.extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def stream_parts(parts: list[Part], *, close: bool = True) -> AsyncIterator[bytes]:
    """The encoded body; ``close=False`` leaves off the closing boundary (a truncated body)."""
    for part in parts:
        yield f"--{BOUNDARY}\r\n".encode() + _headers(part)
        if isinstance(part.content, str):
            yield part.content.encode()
        elif isinstance(part.content, bytes):
            yield part.content
        else:
            async for chunk in part.content():
                yield chunk
        yield b"\r\n"
    if close:
        yield f"--{BOUNDARY}--\r\n".encode()


async def body_bytes(parts: list[Part], *, close: bool = True) -> bytes:
    return b"".join([chunk async for chunk in stream_parts(parts, close=close)])


def generated(size: int, chunk_size: int = 64 * 1024) -> Callable[[], AsyncIterable[bytes]]:
    """A factory of deterministic content of ``size`` bytes, produced chunk by chunk."""
    block = bytes(range(256)) * (chunk_size // 256)

    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        index = 0
        while sent < size:
            # A distinct prefix per chunk so reordered or repeated chunks change the hash.
            chunk = (index.to_bytes(8, "big") + block[8:])[: size - sent]
            yield chunk
            sent += len(chunk)
            index += 1

    return gen
