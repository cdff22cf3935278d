"""The seed's environment variables map onto the default storage service; the shipped settings load uploads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plugboard.errors import ConfigError
from plugboard.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "settings.yaml", tmp_path / "settings.yaml")
    return tmp_path


def test_upload_provider_and_aws_variables_select_the_default_storage_service(project):
    from plugboard.app import create_app

    env = {"UPLOAD_PROVIDER": "s3", "AWS_S3_BUCKET": "media-bucket", "AWS_S3_REGION": "eu-west-1"}
    settings = Settings.load(project, environ=env)
    app = create_app(settings)
    from plugboard import keys

    decl = next(d for d in app[keys.SERVICES].declared() if d.kind == "storage" and d.name == "default")
    assert decl.provider == "s3"
    assert (decl.config.bucket, decl.config.region) == ("media-bucket", "eu-west-1")


def test_s3_without_a_bucket_names_the_variable(project):
    from plugboard.app import create_app

    with pytest.raises(ConfigError) as e:
        create_app(Settings.load(project, environ={"UPLOAD_PROVIDER": "s3"}))
    assert "services.storage.default.bucket" in str(e.value)


def test_unknown_provider_lists_the_available_ones(project):
    from plugboard.app import create_app

    with pytest.raises(ConfigError) as e:
        create_app(Settings.load(project, environ={"UPLOAD_PROVIDER": "ftp"}))
    text = str(e.value)
    assert "UPLOAD_PROVIDER" in text and "s3" in text and "local" in text, text


def test_shipped_settings_declare_uploads_on_local_storage(project):
    from plugboard import keys
    from plugboard.app import create_app

    app = create_app(Settings.load(project, environ={}))
    assert "uploads" in app[keys.PLUGIN_CONFIGS]
    assert app[keys.SERVICES].provider("storage", "default") == "local"
