"""The :class:`Upload` object resolvers receive for a file sent with a multipart request.

The multipart transport (``plugboard.transports.multipart``) streams each file
part into a temporary file that stays in memory up to a spool threshold and
rolls over to disk beyond it, then hands resolvers an :class:`Upload` wrapping
that file. Reads are async: small reads run inline (they are memory copies or
page-cache hits), larger ones in a worker thread so a resolver reading a big
file never stalls the event loop. The transport owns the file's lifetime and
closes it after the response is sent, so resolvers must copy out (``save``)
anything they want to keep.

A plugin that owns fields taking ``Upload`` arguments can have the transport
refuse a file while it streams rather than after it is spooled: it returns
:class:`UploadRules` for those fields from ``plugboard_upload_rules``; the
transport applies a lower ``max_file_size`` as bytes arrive and calls
``check`` with the file's first bytes (:class:`UploadHead`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import IO, Any, AsyncIterator, Awaitable, Callable

import attrs

DEFAULT_MIMETYPE = "application/octet-stream"
DEFAULT_ENCODING = "7bit"

# Reads up to this size run on the event loop: a thread hop costs more than
# copying this much from memory or the page cache.
_INLINE_READ = 256 * 1024
_SAVE_CHUNK = 1024 * 1024


class Upload:
    """One uploaded file: its metadata and async access to its content.

    :param file: a readable, seekable binary file holding the content
        (normally a ``tempfile.SpooledTemporaryFile``), positioned at 0.
    :param filename: the file name the client sent ("" when it sent none).
    :param mimetype: the part's Content-Type header.
    :param encoding: the part's Content-Transfer-Encoding header. The content
        is stored as sent, never decoded (RFC 7578 forbids senders to use it).
    :param size: the content's length in bytes; measured from ``file`` if None.
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        filename: str,
        mimetype: str = DEFAULT_MIMETYPE,
        encoding: str = DEFAULT_ENCODING,
        size: int | None = None,
    ) -> None:
        self._file = file
        self.filename = filename
        self.mimetype = mimetype
        self.encoding = encoding
        if size is None:
            position = file.tell()
            size = file.seek(0, os.SEEK_END)
            file.seek(position)
        self.size: int = size

    @property
    def file(self) -> IO[bytes]:
        """The underlying binary file, for libraries that want one (Pillow, zipfile).

        It shares its position with :meth:`read` and :meth:`stream`; call
        ``seek(0)`` before handing it over if the content was already read.
        """
        return self._file

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the content is gone)."""
        return self._file.closed

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all that is left if ``n`` < 0) from the current position."""
        remaining = max(self.size - self._file.tell(), 0)
        wanted = remaining if n < 0 else min(n, remaining)
        if wanted <= _INLINE_READ:
            return self._file.read(n)
        return await asyncio.to_thread(self._file.read, n)

    async def stream(self, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """Yield the content from the current position in chunks of ``chunk_size`` bytes."""
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        while chunk := await self.read(chunk_size):
            yield chunk

    async def save(self, path: str | os.PathLike[str]) -> None:
        """Copy the whole content to ``path`` (created or truncated).

        Always copies from the start, whatever the current position, and
        leaves the position where it was: a partial copy is never what a
        caller saving a file means. The copy runs in a worker thread.
        """
        await asyncio.to_thread(self._copy_to, os.fspath(path))

    def _copy_to(self, path: str) -> None:
        position = self._file.tell()
        try:
            self._file.seek(0)
            with open(path, "wb") as out:
                shutil.copyfileobj(self._file, out, _SAVE_CHUNK)
        finally:
            self._file.seek(position)

    def seek(self, offset: int = 0, whence: int = os.SEEK_SET) -> int:
        """Move the read position (``seek(0)`` to read again from the start); returns it."""
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        """The current read position."""
        return self._file.tell()

    def close(self) -> None:
        """Close and delete the temporary file. Safe to call more than once."""
        self._file.close()

    def __repr__(self) -> str:
        return f"<Upload filename={self.filename!r} mimetype={self.mimetype!r} size={self.size}>"


@attrs.frozen
class UploadHead:
    """The first bytes of a file on its way in, for :attr:`UploadRules.check`.

    :ivar field: the schema coordinate of the field the file is an argument
        of (``Mutation.uploadFile``).
    :ivar filename: the file name the client sent ("" when it sent none).
    :ivar mimetype: the part's declared Content-Type (the client's claim).
    :ivar data: the first :attr:`UploadRules.head_size` bytes, or the whole
        file when it is shorter.
    :ivar complete: True when ``data`` is the whole file.
    """

    field: str
    filename: str
    mimetype: str
    data: bytes
    complete: bool


@attrs.frozen(kw_only=True)
class UploadRules:
    """What a field accepts in its ``Upload`` arguments, enforced while the file streams in.

    The multipart transport finds the fields each file is mapped to (through
    the operation's variables) and applies the rules of every one of them on
    top of the core's ``graphql.max_file_size``: the smallest limit wins.

    :ivar max_file_size: bytes allowed per file; beyond it the transport stops
        reading, answers 413 with ``extensions.code`` ``FILE_TOO_LARGE``,
        and removes the temporary file. None: the core's limit only.
    :ivar check: called once with an :class:`UploadHead` as soon as
        ``head_size`` bytes have arrived (or the whole file, if shorter);
        may be ``async``. Raise :class:`plugboard.graphql.errors.GraphQLError`
        to refuse the file: the request is answered with the error's HTTP
        status and code, before the rest of the body is read.
    :ivar head_size: how many leading bytes ``check`` wants (type sniffing
        needs a few KB).
    """

    max_file_size: int | None = None
    check: Callable[[UploadHead], Awaitable[Any] | Any] | None = None
    head_size: int = 8192
