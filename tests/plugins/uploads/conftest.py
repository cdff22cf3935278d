"""Fixtures for the uploads plugin's tests: ``uploads_client(uploads=None, **sections)`` -> a started client; the GCS emulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from uploads_kit import GCS_BUCKET as BUCKET, auth_plugin, settings


@pytest.fixture
async def uploads_client(plugboard_client):
    async def make(uploads: dict | None = None, **sections):
        return await plugboard_client(settings(uploads, **sections), plugins=[auth_plugin()])

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator (GCS's JSON API, and PUT/GET on /<bucket>/<object>) in a subprocess, one per session."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("gcp-storage-emulator did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def service_account(tmp_path):
    """A service account key file (a fresh RSA key): what signs the V4 URLs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem,
        "client_email": "uploads@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path, key.public_key()
