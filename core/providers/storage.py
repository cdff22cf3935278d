"""The storage provider kind: named files (keys) that plugins write, read and hand out URLs to.

An implementation is declared with ``ProviderSpec(kind="storage", name=...)``
and selected by the plugin that stores files (``jobs.storage: local``; the
uploads plugin adds ``s3``, ``gcs``, ``cloudinary``). The core ships the
embedded default, :class:`LocalStorage`: files under ``<server.data_dir>/files``,
served by the core's ``GET <server.files_path>/{key}`` route through signed,
expiring URLs (:class:`FileSigner`).

Keys are relative, ``/``-separated names (``exports/books-3f2a.csv``); see
:func:`check_key` for what is refused. Callers namespace their keys by prefix
(``tmp/`` is for temporary files the cleanup job removes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import mimetypes
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, BinaryIO, Protocol, Union, runtime_checkable
from urllib.parse import quote

import attrs

from plugboard.errors import PlugboardError

#: What ``put`` accepts: bytes, a binary file-like object, or an async iterator of byte chunks.
Data = Union[bytes, bytearray, memoryview, BinaryIO, AsyncIterable[bytes]]

#: Longest key accepted, in characters.
MAX_KEY_LENGTH = 512
_CHUNK = 64 * 1024
#: Folders of the local root that are not keys: temporary files, metadata sidecars.
_TMP_DIR = ".tmp"
_META_DIR = ".meta"


class StorageError(PlugboardError):
    """A storage operation failed for a reason the caller can act on."""


class InvalidKey(StorageError, ValueError):
    """The key is not an acceptable file name (absolute, ``..``, control characters ...)."""


@attrs.define(frozen=True, kw_only=True)
class StoredFile:
    """A stored file's key and metadata."""

    key: str
    size: int
    content_type: str
    #: Last modification, unix seconds (the cleanup job compares it with a max age).
    modified: float


@runtime_checkable
class Storage(Protocol):
    """Store and retrieve files by key; hand out download URLs.

    Lifecycle: ``await start()`` before use, ``await close()`` at shutdown
    (both may do nothing). Missing keys raise :class:`FileNotFoundError`;
    unacceptable keys raise :class:`InvalidKey` (check them with
    :func:`check_key`, so every provider refuses the same names).

    Example::

        stored = await storage.put("exports/books.csv", b"id,title\\n", content_type="text/csv")
        link = await storage.url(stored.key, expires_in=3600)
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, data: Data, *, content_type: str | None = None) -> StoredFile:
        """Write ``data`` under ``key``, replacing any file there; readers never see a partial file.

        :param content_type: the MIME type served with the file; guessed from the key's
            extension when None.
        """

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The file's content as an async iterator of chunks."""

    async def read(self, key: str) -> bytes:
        """The whole file."""

    async def stat(self, key: str) -> StoredFile:
        """The file's metadata."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> bool:
        """Remove the file; False when there was none."""

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        """A URL that downloads the file until ``expires_in`` seconds from now."""

    def list(self, prefix: str = "") -> AsyncIterator[StoredFile]:
        """Every file whose key starts with ``prefix`` (a folder such as ``tmp/``), in no set order."""


def check_key(key: Any) -> str:
    """``key`` if it is an acceptable storage key, else :class:`InvalidKey`.

    Refused: empty keys, absolute keys, backslashes, empty, ``.`` or ``..``
    segments, segments starting with ``.`` (reserved for the provider's own
    files), control characters, and keys over :data:`MAX_KEY_LENGTH`.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("a storage key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"storage key longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/") or "\\" in key:
        raise InvalidKey(f"storage key {key!r} must be relative and use '/' between folders")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey("storage key contains control characters")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKey(f"storage key {key!r} has an empty segment or one starting with '.'")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' or a key-like string, optionally ending in '/'."""
    if prefix:
        check_key(prefix.rstrip("/") or "x/")
    return prefix


def guess_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"


# ---------------------------------------------------------------------------
# Signed URLs
# ---------------------------------------------------------------------------


class FileSigner:
    """Signs and checks the expiring download URLs of local files.

    HMAC-SHA256 over ``key`` and the expiry time, keyed with
    ``server.secret_key`` when set, else with a random key generated once
    and kept in ``<data_dir>/secret_key`` (mode 0600), so every process of
    one deployment (server, workers) signs alike.
    """

    def __init__(self, secret: str | None, data_dir: Path) -> None:
        self._secret = secret.encode() if secret else None
        self._data_dir = Path(data_dir)

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_or_create_secret(self._data_dir / "secret_key")
        return self._secret

    def signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def query(self, key: str, expires_in: float, *, now: float | None = None) -> str:
        """The ``expires=...&signature=...`` query string for ``key``."""
        expires = int((time.time() if now is None else now) + expires_in)
        return f"expires={expires}&signature={self.signature(key, expires)}"

    def verify(self, key: str, expires: str | None, signature: str | None, *, now: float | None = None) -> bool:
        if not expires or not signature or not (expires.isascii() and expires.isdigit()) or len(expires) > 15:
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.signature(key, int(expires)), signature)


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``; created (0600, atomically) with 32 random bytes if missing."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            # link, not rename: when two processes race, the first one's key
            # wins and the other reads it instead of replacing it.
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    if not text:
        raise StorageError(f"{path} is empty: delete it to have a new signing key generated")
    return text.encode()


# ---------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------


@attrs.define(frozen=True, kw_only=True)
class LocalStorageConfig:
    """Options of the ``local`` storage provider."""

    #: Prefix for download URLs (``https://api.example.com``); empty: URLs are paths
    #: on this server (``/files/exports/books.csv?...``).
    base_url: str = ""


class LocalStorage:
    """Files under ``<server.data_dir>/files``; downloads through the core's files route.

    Writes go to a temporary file in the same file system, then ``os.replace``
    onto the key's path, so a reader sees the old file or the new one, never
    half of one. The content type is kept in a small JSON sidecar under
    ``.meta/``. Blocking file I/O runs in the default executor.
    """

    def __init__(self, config: LocalStorageConfig | None = None, *, app: Any = None, root: Path | None = None, signer: FileSigner | None = None) -> None:
        self.config = config or LocalStorageConfig()
        if app is not None:
            from plugboard import keys

            core = app[keys.CORE_CONFIG]
            data_dir = app[keys.SETTINGS].root / core.server.data_dir
            root = root or files_root(data_dir)
            signer = signer or app.get(keys.FILE_SIGNER)
            self.files_path = core.server.files_path
        else:
            self.files_path = "/files"
        if root is None:
            raise StorageError("LocalStorage needs the app or a root folder")
        self.root = Path(root).resolve()
        self.signer = signer or FileSigner(None, self.root.parent)

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        (self.root / _TMP_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / _META_DIR).mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")

    def path(self, key: str) -> Path:
        """The file's path; refuses keys that would leave the root (symlinks included)."""
        check_key(key)
        path = self.root / key
        resolved = path.resolve()
        if resolved != path and not resolved.is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} leads outside the storage folder")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / _META_DIR / f"{key}.json"

    async def put(self, key: str, data: Data, *, content_type: str | None = None) -> StoredFile:
        path = self.path(key)
        content_type = content_type or guess_type(key)
        tmp = self.root / _TMP_DIR / f"{uuid.uuid4().hex}.part"
        if hasattr(data, "__aiter__"):
            return await self._put_stream(tmp, path, key, content_type, data)  # type: ignore[arg-type]
        if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
            raise TypeError(f"cannot store a {type(data).__name__}: expected bytes, a binary file or an async iterator of bytes")
        # Bytes and files are written, synced and committed in one thread job:
        # under a burst of small uploads each hop to the pool queues behind the
        # others, so one hop per file instead of six is most of put()'s latency.
        return await asyncio.to_thread(self._put_sync, tmp, path, key, content_type, data)

    def _put_sync(self, tmp: Path, path: Path, key: str, content_type: str, data: Any) -> StoredFile:
        try:
            with _open_new(tmp) as f:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    f.write(data)
                else:
                    _copy(data, f)
                _flush(f)
            self._commit(tmp, path, key, content_type)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._stat(key)

    async def _put_stream(self, tmp: Path, path: Path, key: str, content_type: str, data: AsyncIterator[bytes]) -> StoredFile:
        try:
            f = await asyncio.to_thread(_open_new, tmp)
            try:
                async for chunk in data:
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(_flush, f)
            finally:
                await asyncio.to_thread(f.close)
            await asyncio.to_thread(self._commit, tmp, path, key, content_type)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return await self.stat(key)

    def _commit(self, tmp: Path, path: Path, key: str, content_type: str) -> None:
        created = _make_dirs(path.parent)
        # The resolved parent must still be inside the root: a folder on the
        # way may be a symlink created since path() checked.
        if not path.parent.resolve().is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} leads outside the storage folder")
        meta = self._meta_path(key)
        created += _make_dirs(meta.parent)
        meta_tmp = self.root / _TMP_DIR / f"{uuid.uuid4().hex}.meta"
        with open(meta_tmp, "w") as f:
            f.write(json.dumps({"content_type": content_type}))
            _flush(f)
        os.replace(meta_tmp, meta)
        os.replace(tmp, path)
        # A rename is durable only once its directory is: without this, a
        # power cut after put() returned may leave the old file, or none
        # (the file's own data was fsynced before the rename). Folders made
        # for this key need their parents synced for the same reason.
        for folder in {path.parent, meta.parent, *(d.parent for d in created)}:
            _fsync_dir(folder)

    async def open(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        path = self.path(key)
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def stat(self, key: str) -> StoredFile:
        return await asyncio.to_thread(self._stat, key)

    def _stat(self, key: str) -> StoredFile:
        path = self.path(key)
        st = path.stat()
        if not path.is_file():
            raise FileNotFoundError(key)
        return StoredFile(key=key, size=st.st_size, content_type=self.content_type(key), modified=st.st_mtime)

    def content_type(self, key: str) -> str:
        """The type given to ``put``, else one guessed from the extension."""
        try:
            return json.loads(self._meta_path(key).read_text())["content_type"]
        except (OSError, ValueError, KeyError, TypeError):
            return guess_type(key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> bool:
        path = self.path(key)
        self._meta_path(key).unlink(missing_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        # Leave no empty folders behind (up to, not including, the root).
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        check_key(key)
        return f"{self.config.base_url.rstrip('/')}{self.files_path}/{quote(key)}?{self.signer.query(key, expires_in)}"

    async def list(self, prefix: str = "") -> AsyncIterator[StoredFile]:  # type: ignore[override]
        check_prefix(prefix)
        files = await asyncio.to_thread(self._list, prefix)
        for f in files:
            yield f

    def _list(self, prefix: str) -> list[StoredFile]:
        # Walk only the folder the prefix names, not the whole tree.
        folder, _, _ = prefix.rpartition("/")
        start = self.root / folder if folder else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or name.startswith("."):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                out.append(StoredFile(key=key, size=st.st_size, content_type=self.content_type(key), modified=st.st_mtime))
        return out


def files_root(data_dir: Path) -> Path:
    """Where local storage keeps its files for a data directory."""
    return Path(data_dir) / "files"


def _open_new(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


def _copy(src: BinaryIO, dst: BinaryIO) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)


def _flush(f: io.IOBase) -> None:
    f.flush()
    os.fsync(f.fileno())


def _make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
    return list(reversed(missing))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "Data",
    "FileSigner",
    "InvalidKey",
    "LocalStorage",
    "LocalStorageConfig",
    "Storage",
    "StorageError",
    "StoredFile",
    "check_key",
    "files_root",
    "guess_type",
    "load_or_create_secret",
]
