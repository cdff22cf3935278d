"""email: settings, the seed's EmailConfig and environment variables, and their errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plugboard.app import create_app
from plugboard.errors import ConfigError
from plugboard.plugins.email.keys import EMAIL
from plugboard.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_seed_email_config_spelling(make_email_app):
    app = make_email_app({"email": {"templates": {"welcome": True, "passwordReset": False, "verification": True},
                                    "features": {"bounce": True, "unsubscribe": True, "analytics": True}}})
    config = app[EMAIL].config
    assert config.templates.password_reset is False and config.features.analytics is True
    assert "password-reset" not in app[EMAIL].builtin_names()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"email": {"provider": "sendgrid"}}, "email.provider = 'sendgrid'.*uses the 'outbox' provider; email.provider must agree"),
        ({"email": {"provider": "pigeon"}}, "email.provider = 'pigeon'"),
        ({"email": {"mailer": "bulk"}}, "email.mailer = 'bulk'.*no mailer service of that name"),
        ({"email": {"from_address": "nobody"}}, "email.from_address = 'nobody'.*expected an email address"),
        ({"email": {"public_url": "ftp://x"}}, "email.public_url.*expected an http"),
        ({"email": {"per_recipient_limit": -1}}, "email.per_recipient_limit"),
        ({"email": {"render_timeout": "soon"}}, "email.render_timeout = 'soon'.*not a duration"),
        ({"email": {"templates": {"welcom": True}}}, "email.templates.welcom"),
        ({"email": {"path": "email"}}, "email.path = 'email'"),
        ({"services": {"mailer": {"provider": "sendgrid"}}}, "services.mailer.api_key.*required"),
        ({"services": {"mailer": {"provider": "mailgun", "api_key": "k", "domain": "mg.example.com", "region": "asia"}}}, "services.mailer.region = 'asia'"),
        ({"services": {"mailer": {"provider": "smtp", "host": "h", "user": "u", "password": "p", "starttls": False}}}, "without TLS"),
        ({"services": {"mailer": {"provider": "smtp", "host": "h", "pool_size": 0}}}, "services.mailer.pool_size = 0"),
        ({"services": {"mailer": {"provider": "smtp", "host": "h", "max_messages": -1}}}, "services.mailer.max_messages = -1"),
        ({"services": {"mailer": {"provider": "smtp", "host": "h", "idle_timeout": "never"}}}, "services.mailer.idle_timeout = 'never'"),
        ({"email": {"send_lease": "-1s"}}, "email.send_lease"),
    ],
)
def test_bad_settings_name_the_key(make_email_app, data, message):
    with pytest.raises(ConfigError, match=message):
        make_email_app(data)


def test_provider_may_agree_with_the_service(make_email_app):
    app = make_email_app({"services": {"mailer": {"provider": "mailgun", "api_key": "k", "domain": "mg.example.com", "region": "eu"}}, "email": {"provider": "mailgun"}})
    assert app[EMAIL].config.provider == "mailgun"


def load(tmp_path, environ):
    shutil.copy(ROOT / "settings.yaml", tmp_path / "settings.yaml")
    return Settings.load(tmp_path, environ={"PLUGBOARD_SERVER__DATA_DIR": str(tmp_path / "var"), **environ})


def test_seed_environment_variables_select_the_mailer_service(tmp_path):
    settings = load(tmp_path, {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": "smtp.example.com", "SMTP_PORT": "2525", "SMTP_USER": "me", "SMTP_PASS": "pw"})
    assert settings.get("services.mailer") == {"provider": "smtp", "host": "smtp.example.com", "port": 2525, "user": "me", "password": "pw"}
    assert settings.source("services.mailer.host") == "env SMTP_HOST"
    app = create_app(settings)
    assert "email" in [p for p in app[__import__("plugboard").keys.PLUGIN_CONFIGS]]
    sendgrid = load(tmp_path, {"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.x"})
    assert sendgrid.get("services.mailer") == {"provider": "sendgrid", "api_key": "SG.x"}
    create_app(sendgrid)
    mailgun = load(tmp_path, {"EMAIL_PROVIDER": "mailgun", "MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "mg.example.com", "MAILGUN_REGION": "eu"})
    create_app(mailgun)


def test_smtp_variables_without_email_provider_say_so(tmp_path):
    with pytest.raises(ConfigError, match=r"services.mailer.host = 'smtp.example.com' \(from env SMTP_HOST\): expected a mapping with a provider"):
        create_app(load(tmp_path, {"SMTP_HOST": "smtp.example.com"}))
    with pytest.raises(ConfigError, match=r"services.mailer.host.*\(from env SMTP_HOST\)"):
        create_app(load(tmp_path, {"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "k", "SMTP_HOST": "smtp.example.com"}))


def test_shipped_settings_enable_email_on_the_outbox(tmp_path):
    settings = load(tmp_path, {})
    assert "email" in [e.name for e in settings.plugin_entries()]
    app = create_app(settings)
    from plugboard import keys

    assert app[keys.SERVICES].provider("mailer", app[EMAIL].config.mailer) == "outbox"
