"""Named services: selected once in settings, started with the app, closed in reverse, checked by /readyz."""

from __future__ import annotations

import os
import subprocess
import sys

import attrs
import pytest
import yaml
from aiohttp import web

from core_testkit import make_plugin
from plugboard import keys
from plugboard.errors import ConfigError, ProviderError
from plugboard.providers.memory_pubsub import MemoryPubSub
from plugboard.providers.outbox import OutboxMailer
from plugboard.providers.registry import KINDS, ProviderSpec
from plugboard.providers.services import SERVICE_KINDS
from plugboard.providers.smtp import SmtpMailer
from plugboard.providers.storage import LocalStorage
from plugboard.testing_servers import free_port

#: What each recording provider saw, in order: ("start", name) / ("close", name).
EVENTS: list[tuple[str, str]] = []


@attrs.define(frozen=True, kw_only=True)
class RecordingOptions:
    label: str = "x"
    fail: bool = False


class Recording:
    """A cache (any kind, really) that records its lifecycle; ``fail`` refuses to connect."""

    def __init__(self, config: RecordingOptions) -> None:
        self.config = config

    async def start(self) -> None:
        if self.config.fail:
            raise ConnectionRefusedError(f"[Errno 111] Connect call failed ('127.0.0.1', {free_port()})")
        EVENTS.append(("start", self.config.label))

    async def close(self) -> None:
        EVENTS.append(("close", self.config.label))

    async def check(self) -> None:
        return None


def providers(*specs: ProviderSpec):
    return make_plugin("extras", plugboard_providers=lambda: list(specs))


RECORDING = [
    ProviderSpec(kind=kind, name="recording", factory=Recording, config=RecordingOptions) for kind in ("cache", "ratelimit", "storage")
]


@pytest.fixture(autouse=True)
def _clear_events():
    EVENTS.clear()
    yield
    EVENTS.clear()


async def test_embedded_defaults_start_and_are_shared(make_app, aiohttp_client):
    app = make_app()
    services = app[keys.SERVICES]
    assert {d.key: d.provider for d in services.declared()} == {
        "services.pubsub.default": "memory",
        "services.storage.default": "local",
        "services.mailer.default": "outbox",
    }
    client = await aiohttp_client(app)
    assert isinstance(services.get("storage"), LocalStorage)
    assert isinstance(services.get("mailer"), OutboxMailer)
    assert isinstance(services.get("pubsub"), MemoryPubSub)
    assert app[keys.PUBSUB] is services.get("pubsub")
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    for label in ("pubsub.default:memory", "storage.default:local", "mailer.default:outbox"):
        assert body["checks"][label] == "ok"


async def test_named_services_and_the_shorthand(make_app, aiohttp_client, tmp_path):
    app = make_app(
        {
            "services": {
                "storage": {"default": {"provider": "local"}, "exports": {"provider": "local", "base_url": "https://files.example.com"}},
                "mailer": {"provider": "outbox", "dir": "mail"},
            }
        }
    )
    services = app[keys.SERVICES]
    assert services.names("storage") == ["default", "exports"]
    assert services.names("mailer") == ["default"]
    await aiohttp_client(app)
    assert services.get("storage", "exports").config.base_url == "https://files.example.com"
    assert services.get("mailer").dir == tmp_path / "mail"
    with pytest.raises(LookupError, match=r"no storage service 'media' \(configured: default, exports\); declare it under services.storage"):
        services.get("storage", "media")
    with pytest.raises(LookupError, match=r"no cache service 'default' \(configured: none\)"):
        services.get("cache")


def test_the_two_forms_meet_when_layers_write_them_differently(make_app, tmp_path):
    # settings.yaml in the long form, an environment alias in the shorthand...
    app = make_app({"services": {"storage": {"default": {"provider": "local"}, "exports": {"provider": "local"}, "base_url": "https://cdn.example.com"}}})
    services = app[keys.SERVICES]
    assert services.names("storage") == ["default", "exports"]
    assert services.require("storage", "default", key="k", source="s").config.base_url == "https://cdn.example.com"
    # ...and the reverse.
    app = make_app({"services": {"mailer": {"provider": "outbox", "default": {"dir": "mail"}}}})
    assert str(app[keys.SERVICES].require("mailer", "default", key="k", source="s").config.dir).endswith("mail")
    # An option set in both forms is refused, naming both keys, without its value.
    with pytest.raises(ConfigError) as info:
        make_app({"services": {"mailer": {"provider": "smtp", "password": "hunter2", "default": {"password": "swordfish"}}}})
    text = str(info.value)
    assert "services.mailer.password = '...'" in text and "also set as services.mailer.default.password" in text
    assert "hunter2" not in text and "swordfish" not in text


@pytest.mark.parametrize("kind", SERVICE_KINDS)
def test_an_unknown_provider_is_a_settings_error_for_every_kind(make_app, kind):
    with pytest.raises(ConfigError) as info:
        make_app({"services": {kind: {"provider": "nope"}}}, plugins=[providers(*RECORDING)])
    text = str(info.value)
    assert f"services.{kind}.provider = 'nope' (from override): unknown {kind} provider; available: " in text
    if kind in ("storage", "mailer", "pubsub"):  # the core's own embedded providers
        assert KINDS[kind].default in text.partition("available: ")[2]
    # The long form names the service.
    with pytest.raises(ConfigError, match=rf"services\.{kind}\.main\.provider = 'nope'"):
        make_app({"services": {kind: {"main": {"provider": "nope"}}}})


def test_a_default_service_appears_once_a_plugin_provides_its_provider(make_app):
    # cache and ratelimit have no provider in the core: no default service...
    assert make_app()[keys.SERVICES].names("cache") == []
    # ...until a plugin declares the kind's default provider ("memory").
    memory = ProviderSpec(kind="cache", name="memory", factory=Recording, config=RecordingOptions)
    app = make_app(plugins=[providers(memory)])
    assert app[keys.SERVICES].names("cache") == ["default"] and app[keys.SERVICES].provider("cache") == "memory"


def test_service_problems_are_collected_with_the_others(make_app):
    with pytest.raises(ConfigError) as info:
        make_app(
            {
                "services": {
                    "storage": {"media": {"provider": "local", "bucket": "b"}, "Bad Name": {"provider": "local"}},
                    "mailer": {"provider": "smtp", "port": "many", "password": "hunter2"},
                    "caches": {"provider": "memory"},
                },
                "server": {"port": -1},
            }
        )
    text = str(info.value)
    assert "services.storage.media.bucket = 'b' (from override): unknown key" in text
    assert "services.storage.bad name = '...'" in text and "lowercase letters" in text
    assert "services.mailer.port = 'many'" in text
    assert "services.caches = '...' (from override): unknown service kind; expected one of: pubsub, storage, mailer, cache, ratelimit" in text
    assert "server.port = -1" in text
    assert "hunter2" not in text
    with pytest.raises(ConfigError, match=r"services.pubsub = 'redis' \(from override\): expected a mapping"):
        make_app({"services": {"pubsub": "redis"}})


def test_a_missing_dependency_names_the_package_to_install(make_app):
    spec = ProviderSpec(kind="cache", name="fancy", factory="plugboard_no_such_package.cache:Cache", requires="fancy-cache>=2")
    with pytest.raises(ConfigError) as info:
        make_app({"services": {"cache": {"provider": "fancy"}}}, plugins=[providers(spec)])
    text = str(info.value)
    assert "services.cache.provider = 'fancy'" in text and "pip install fancy-cache>=2" in text


def test_an_unknown_kind_is_refused_naming_the_plugin(make_app):
    spec = ProviderSpec(kind="cahce", name="x", factory=Recording)
    with pytest.raises(ProviderError, match="plugin 'extras' declares a provider of unknown kind 'cahce'; kinds: storage, mailer"):
        make_app(plugins=[providers(spec)])


async def test_a_service_that_cannot_connect_stops_start_up_and_closes_the_others(make_app):
    app = make_app(
        {"services": {"cache": {"provider": "recording", "label": "cache"}, "ratelimit": {"provider": "recording", "fail": True}}},
        plugins=[providers(*RECORDING)],
    )
    runner = web.AppRunner(app, handle_signals=False)
    with pytest.raises(ProviderError) as info:
        await runner.setup()
    assert "ratelimit provider 'recording' failed to start: ConnectionRefusedError" in str(info.value)
    await runner.cleanup()
    # The cache started before the failure and was closed; nothing is left.
    assert EVENTS == [("start", "cache"), ("close", "cache")]
    assert app[keys.PROVIDERS].created == []


async def test_services_close_in_reverse_order_after_plugins(make_app, aiohttp_client):
    seen = []

    async def lifespan(app):
        seen.append(("plugin up", app[keys.SERVICES].get("cache").config.label))
        yield
        seen.append(("plugin down", list(EVENTS)))

    plugin = make_plugin("user", plugboard_lifespan=lifespan)
    app = make_app(
        {"services": {"cache": {"provider": "recording", "label": "c"}, "ratelimit": {"provider": "recording", "label": "r"}}},
        plugins=[providers(*RECORDING), plugin],
    )
    client = await aiohttp_client(app)
    await client.close()
    assert seen == [("plugin up", "c"), ("plugin down", [("start", "c"), ("start", "r")])]
    assert EVENTS == [("start", "c"), ("start", "r"), ("close", "r"), ("close", "c")]


async def test_readyz_reports_a_failing_service(make_app, aiohttp_client):
    app = make_app({"services": {"mailer": {"provider": "smtp", "host": "127.0.0.1", "port": free_port(), "timeout": "2s"}}})
    client = await aiohttp_client(app)
    assert isinstance(app[keys.SERVICES].get("mailer"), SmtpMailer)
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert "does not answer" in body["checks"]["mailer.default:smtp"]


async def test_readyz_passes_with_a_real_smtp_server(make_app, aiohttp_client):
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(object(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        client = await aiohttp_client(make_app({"services": {"mailer": {"provider": "smtp", "host": "127.0.0.1", "port": port, "starttls": False}}}))
        resp = await client.get("/readyz")
        assert resp.status == 200, await resp.text()
    finally:
        controller.stop()


def test_the_realtime_pubsub_key_moved_to_the_core(make_app, caplog):
    with pytest.raises(ConfigError, match=r"realtime.pubsub = 'redis'.*write `services: \{pubsub: \{provider: redis\}\}`"):
        make_app({"plugins": ["realtime"], "realtime": {"pubsub": "redis"}})
    # Naming what the core selects anyway still works, with a warning, for one release.
    make_app({"plugins": ["realtime"], "realtime": {"pubsub": "memory"}})
    assert "realtime.pubsub is deprecated" in caplog.text


def test_a_plugin_cannot_take_the_services_section(make_app):
    plugin = make_plugin("services", plugboard_config_class=lambda: RecordingOptions)
    with pytest.raises(ConfigError, match="plugin 'services' uses a name reserved for a core section"):
        make_app(plugins=[plugin])


def test_a_plugin_named_for_a_kind_keeps_its_own_section(make_app):
    # The cache plugin's own settings live under cache:, its store under services.cache.
    plugin = make_plugin("cache", plugboard_config_class=lambda: RecordingOptions)
    app = make_app({"plugins": [], "cache": {"label": "mine"}, "services": {"cache": {"provider": "recording"}}}, plugins=[plugin, providers(*RECORDING)])
    assert app[keys.PLUGIN_CONFIGS]["cache"].label == "mine"
    assert app[keys.SERVICES].provider("cache") == "recording"


def test_serve_exits_2_when_a_service_cannot_start(tmp_path):
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"plugins": [], "server": {"data_dir": "var"}, "services": {"pubsub": {"provider": "redis"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOARD_") and k != "REDIS_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "plugboard.cli", "serve", "--root", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pubsub: redis needs redis.url (or REDIS_URL)" in proc.stderr
    assert "Traceback" not in proc.stderr
