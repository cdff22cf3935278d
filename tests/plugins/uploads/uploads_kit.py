"""Helpers for the uploads plugin's tests: a bearer-token identity plugin, multipart forms, sample files."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path
from typing import Any

from plugboard import hookimpl

PREFLIGHT = {"apollo-require-preflight": "true"}
#: The GCS emulator's default bucket (conftest's ``gcs_emulator``).
GCS_BUCKET = "plugboard-gcs"

FILE_FIELDS = "id filename mimetype encoding url size createdAt owner visibility processing jobId variants { format width height size url }"
UPLOAD = f"mutation($f: Upload!, $v: FileVisibility) {{ uploadFile(file: $f, visibility: $v) {{ {FILE_FIELDS} }} }}"
UPLOAD_MANY = f"mutation($fs: [Upload!]!) {{ uploadMultipleFiles(files: $fs) {{ {FILE_FIELDS} }} }}"


def auth_plugin() -> Any:
    """``Authorization: Bearer <user>`` -> ``context.identity``; the user ``root`` is an admin."""

    def plugboard_context(context, request, connection_params):
        header = request.headers.get("Authorization", "") if request is not None else ""
        if not header.startswith("Bearer "):
            return None
        user = header[7:]
        return {"identity": user, "roles": ["admin"] if user == "root" else []}

    plugin = types.SimpleNamespace(__name__="test_auth")
    plugin.plugboard_context = hookimpl(plugboard_context)
    return plugin


def settings(uploads: dict | None = None, **sections: Any) -> dict:
    data: dict[str, Any] = {"plugins": ["uploads"], "uploads": {"image_optimization": {"enabled": False}, **(uploads or {})}}
    data.update(sections)
    return data


class RawForm:
    """A multipart/form-data body built by hand: file names go raw (UTF-8, as browsers send
    them), where aiohttp's FormData would percent-encode them."""

    boundary = "plugboard-test-boundary-7d3f"

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def add_field(self, name: str, value: Any, *, filename: str | None = None, content_type: str | None = None) -> None:
        head = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename.replace(chr(34), "%22")}"'
        if content_type:
            head += f"\r\nContent-Type: {content_type}"
        body = value if isinstance(value, bytes) else str(value).encode()
        self.parts.append(f"--{self.boundary}\r\n{head}\r\n\r\n".encode() + body + b"\r\n")

    def body(self) -> bytes:
        return b"".join(self.parts) + f"--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}


def form(query: str, files: list[tuple[str, bytes, str]], *, many: bool = False, variables: dict | None = None) -> RawForm:
    data = RawForm()
    if many:
        variables = {"fs": [None] * len(files), **(variables or {})}
        mapping = {str(i): [f"variables.fs.{i}"] for i in range(len(files))}
    else:
        variables = {"f": None, **(variables or {})}
        mapping = {"0": ["variables.f"]}
    data.add_field("operations", json.dumps({"query": query, "variables": variables}))
    data.add_field("map", json.dumps(mapping))
    for i, (filename, content, ctype) in enumerate(files):
        data.add_field(str(i), content, filename=filename, content_type=ctype)
    return data


async def upload(client: Any, filename: str, content: bytes, ctype: str, *, user: str | None = "alice", status: int = 200, visibility: str | None = None) -> dict:
    headers = dict(PREFLIGHT)
    if user:
        headers["Authorization"] = f"Bearer {user}"
    variables = {"v": visibility} if visibility else None
    body = form(UPLOAD, [(filename, content, ctype)], variables=variables)
    async with client.post("/graphql", data=body.body(), headers={**headers, **body.headers}) as resp:
        text = await resp.text()
        assert resp.status == status, f"HTTP {resp.status}: {text}"
        return json.loads(text)


async def upload_many(client: Any, files: list[tuple[str, bytes, str]], *, user: str = "alice", status: int | None = None) -> tuple[int, dict]:
    headers = {**PREFLIGHT, "Authorization": f"Bearer {user}"}
    body = form(UPLOAD_MANY, files, many=True)
    async with client.post("/graphql", data=body.body(), headers={**headers, **body.headers}) as resp:
        text = await resp.text()
        if status is not None:
            assert resp.status == status, f"HTTP {resp.status}: {text}"
        return resp.status, json.loads(text)


def png(width: int = 64, height: int = 48, *, exif_orientation: int | None = None) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), (200, 30, 30))
    out = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", exif=exif)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def elf() -> bytes:
    """The start of a Linux executable."""
    return b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200


def bomb_png(side: int = 20000) -> bytes:
    """A PNG declaring side x side pixels (400 M by default) that compresses to a few hundred KB."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG", optimize=False)
    return out.getvalue()


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden folders included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def stored(tmp_path: Path) -> list[str]:
    """Keys of the local storage (not its .tmp/.meta helpers)."""
    return [k for k in files_in(tmp_path / "var" / "files") if not k.startswith(".")]
