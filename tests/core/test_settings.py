"""Settings.load: files, overlays, environment variables and aliases, with sources."""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest

from plugboard.config import structure
from plugboard.errors import ConfigError
from plugboard.settings import PluginEntry, Settings
from plugboard.units import Size

BASE = """\
# a comment
plugins:
  - books
  - {name: uploads, enabled: false}

server:
  host: 127.0.0.1
  port: 8000
  debug: false

uploads:
  provider: local
  maxFileSize: 10MB
  s3:
    bucket: media
    region: eu-west-1

redis:
  url: null

env_aliases:
  REDIS_URL: redis.url
  SMTP_PORT: email.smtp.port
  AWS_S3_BUCKET: uploads.s3.bucket
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "settings.yaml", BASE)
    write(tmp_path, "config/production.yaml", "server:\n  host: 0.0.0.0\n\nuploads:\n  s3:\n    bucket: prod-media\n")
    return tmp_path


def problems(error: pytest.ExceptionInfo[ConfigError]) -> list[tuple[str, object, str, str]]:
    return [(p.key, p.value, p.reason, p.source) for p in error.value.problems]


# -- files --------------------------------------------------------------------------


def test_settings_yaml_values_and_sources(project: Path) -> None:
    settings = Settings.load(project, environ={})
    assert settings.root == project
    assert settings.get("server.port") == 8000
    assert settings.section("server") == {"host": "127.0.0.1", "port": 8000, "debug": False}
    assert settings.source("server.port") == "settings.yaml:8"
    assert settings.source("server") == "settings.yaml:6"
    assert settings.source("uploads.s3.bucket") == "settings.yaml:15"
    assert settings.source("redis.url") == "settings.yaml:19"
    assert settings.source("server.workers") == "default"
    assert settings.source("nothing.at.all") == "default"


def test_keys_are_normalized_to_snake_case(project: Path) -> None:
    settings = Settings.load(project, environ={})
    assert settings.section("uploads")["max_file_size"] == "10MB"
    assert "maxFileSize" not in settings.section("uploads")
    # lookups accept any spelling
    assert settings.get("UPLOADS.maxFileSize") == "10MB"
    assert settings.source("uploads.MAX_FILE_SIZE") == "settings.yaml:13"
    assert settings.source("Uploads.maxFileSize") == "settings.yaml:13"


def test_sections_and_absent_section(project: Path) -> None:
    settings = Settings.load(project, environ={})
    assert settings.sections() == ["server", "uploads", "redis"]
    assert settings.section("email") == {}
    assert settings.get("email.smtp.port", 25) == 25


def test_section_is_a_copy(project: Path) -> None:
    settings = Settings.load(project, environ={})
    settings.section("server")["port"] = 1
    assert settings.get("server.port") == 8000


def test_overlay_wins_over_settings_yaml_and_merges(project: Path) -> None:
    settings = Settings.load(project, env="production", environ={})
    assert settings.env == "production"
    assert settings.get("server.host") == "0.0.0.0"
    assert settings.get("server.port") == 8000  # merged, not replaced
    assert settings.get("uploads.s3") == {"bucket": "prod-media", "region": "eu-west-1"}
    assert settings.source("server.host") == "config/production.yaml:2"
    assert settings.source("uploads.s3.bucket") == "config/production.yaml:6"
    assert settings.source("uploads.s3.region") == "settings.yaml:16"


def test_overlay_named_by_plugboard_env(project: Path) -> None:
    settings = Settings.load(project, environ={"PLUGBOARD_ENV": "production"})
    assert settings.get("server.host") == "0.0.0.0"
    assert "env" not in settings.sections()  # the meta variable is not a section


def test_env_argument_beats_plugboard_env(project: Path) -> None:
    write(project, "config/test.yaml", "server:\n  debug: true\n")
    settings = Settings.load(project, env="test", environ={"PLUGBOARD_ENV": "production"})
    assert settings.get("server.debug") is True
    assert settings.get("server.host") == "127.0.0.1"


def test_config_file_overlay(project: Path) -> None:
    other = write(project, "elsewhere/custom.yaml", "server:\n  port: 7000\n")
    settings = Settings.load(project, config_file=other, environ={"PLUGBOARD_ENV": "production"})
    assert settings.get("server.port") == 7000
    assert settings.get("server.host") == "127.0.0.1"  # PLUGBOARD_ENV's overlay is not read
    assert settings.source("server.port") == "elsewhere/custom.yaml:2"
    # relative to root works too
    assert Settings.load(project, config_file="elsewhere/custom.yaml", environ={}).get("server.port") == 7000


def test_lists_are_replaced_not_concatenated(project: Path) -> None:
    write(project, "config/production.yaml", "plugins: [books]\n")
    settings = Settings.load(project, env="production", environ={})
    assert settings.plugin_entries() == [PluginEntry("books")]


def test_null_section_in_overlay_keeps_the_base(project: Path) -> None:
    write(project, "config/production.yaml", "server:\n  # host: 0.0.0.0\n")
    settings = Settings.load(project, env="production", environ={})
    assert settings.get("server.port") == 8000
    assert settings.source("server") == "settings.yaml:6"


def test_secrets_file_wins_over_overlay(project: Path) -> None:
    write(project, ".secrets.yaml", "uploads:\n  s3:\n    bucket: secret-bucket\n")
    settings = Settings.load(project, env="production", environ={})
    assert settings.get("uploads.s3.bucket") == "secret-bucket"
    assert settings.source("uploads.s3.bucket") == ".secrets.yaml:3"


def test_missing_files_are_fine_without_an_overlay(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, environ={})
    assert settings.sections() == []
    assert settings.plugin_entries() == []


def test_empty_settings_file(tmp_path: Path) -> None:
    write(tmp_path, "settings.yaml", "# nothing yet\n")
    assert Settings.load(tmp_path, environ={}).as_dict() == {}


def test_missing_overlay_from_argument(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(project, env="staging", environ={})
    assert problems(info) == [
        ("env", "staging", "no overlay file config/staging.yaml (available: production)", "argument --env")
    ]


def test_missing_overlay_from_plugboard_env(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(project, environ={"PLUGBOARD_ENV": "prod"})
    assert problems(info) == [
        ("env", "prod", "no overlay file config/prod.yaml (available: production)", "env PLUGBOARD_ENV")
    ]


def test_missing_config_file(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(project, config_file="nope.yaml", environ={})
    assert problems(info) == [("config", "nope.yaml", "overlay file not found", "argument --config")]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path / "nowhere", environ={})
    assert problems(info)[0][2] == "not a folder"


def test_yaml_syntax_error_names_file_and_line(project: Path) -> None:
    write(project, "config/production.yaml", "server:\n  host: [0.0.0.0\n  port: 1\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(project, env="production", environ={})
    [(key, value, reason, source)] = problems(info)
    assert key == "config/production.yaml"
    assert source == "config/production.yaml:3"
    assert value == "port: 1"
    assert reason.startswith("not valid YAML: expected ',' or ']'")
    assert "(line 3, column" in reason


def test_yaml_errors_in_several_files_are_reported_together(project: Path) -> None:
    write(project, "settings.yaml", "server: {port: 1\n")
    write(project, ".secrets.yaml", "token: 'unterminated\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(project, environ={})
    got = problems(info)
    assert [k for k, *_ in got] == ["settings.yaml", ".secrets.yaml"]
    assert got[1][1] in ("***", None)  # a secrets file line is never echoed
    assert "unterminated" not in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "settings.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path, environ={})
    assert problems(info) == [("settings.yaml", None, "expected a mapping of sections at the top level", "settings.yaml:1")]


def test_both_spellings_in_one_file(tmp_path: Path) -> None:
    write(tmp_path, "settings.yaml", "uploads:\n  maxFileSize: 1MB\n  max_file_size: 2MB\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path, environ={})
    assert problems(info) == [
        (
            "uploads.max_file_size",
            "2MB",
            "both 'maxFileSize' and 'max_file_size' are set; keep one",
            "settings.yaml:2",
        )
    ]


def test_camel_case_in_one_layer_overridden_by_snake_case_in_another(project: Path) -> None:
    # Normalizing each layer on the way in makes this an override, not a clash.
    settings = Settings.load(project, environ={"PLUGBOARD_UPLOADS__MAX_FILE_SIZE": "20MB"})
    assert settings.section("uploads")["max_file_size"] == "20MB"


# -- environment --------------------------------------------------------------------


def test_env_var_wins_over_files(project: Path) -> None:
    settings = Settings.load(
        project,
        env="production",
        environ={"PLUGBOARD_SERVER__PORT": "9000", "PLUGBOARD_SERVER__DEBUG": "true", "PLUGBOARD_UPLOADS__S3__BUCKET": "env-bucket"},
    )
    assert settings.get("server.port") == 9000
    assert settings.get("server.debug") is True
    assert settings.get("server.host") == "0.0.0.0"
    assert settings.get("uploads.s3.bucket") == "env-bucket"
    assert settings.source("server.port") == "env PLUGBOARD_SERVER__PORT"
    assert settings.source("uploads.s3.bucket") == "env PLUGBOARD_UPLOADS__S3__BUCKET"
    assert settings.source("server.host") == "config/production.yaml:2"
    assert settings.source("uploads.s3.region") == "settings.yaml:16"


def test_env_values_are_parsed_like_dynaconf(tmp_path: Path) -> None:
    settings = Settings.load(
        tmp_path,
        environ={
            "PLUGBOARD_A__INT": "5",
            "PLUGBOARD_A__FLOAT": "1.5",
            "PLUGBOARD_A__FALSE": "false",
            "PLUGBOARD_A__LIST": '["x", "y"]',
            "PLUGBOARD_A__TABLE": "{inner = 1}",
            "PLUGBOARD_A__TEXT": "10MB",
            "PLUGBOARD_A__URL": "redis://localhost:6379/0",
            "PLUGBOARD_A__QUOTED": '"5"',
            "PLUGBOARD_A__DATE": "2024-01-01",
        },
    )
    assert settings.section("a") == {
        "int": 5,
        "float": 1.5,
        "false": False,
        "list": ["x", "y"],
        "table": {"inner": 1},
        "text": "10MB",
        "url": "redis://localhost:6379/0",
        "quoted": "5",
        "date": "2024-01-01",
    }


def test_whole_section_variable_and_specific_variable(tmp_path: Path) -> None:
    settings = Settings.load(
        tmp_path,
        environ={"PLUGBOARD_SERVER": "{port = 1, host = 'h'}", "PLUGBOARD_SERVER__PORT": "2"},
    )
    assert settings.section("server") == {"port": 2, "host": "h"}
    assert settings.source("server.port") == "env PLUGBOARD_SERVER__PORT"
    assert settings.source("server.host") == "env PLUGBOARD_SERVER"


def test_meta_and_foreign_variables_are_not_sections(tmp_path: Path) -> None:
    settings = Settings.load(
        tmp_path,
        environ={"PLUGBOARD_ROOT": "/srv", "PLUGBOARD_CONFIG": "x.yaml", "PLUGBOARD_LOG": "debug", "OTHER__X": "1"},
    )
    assert settings.sections() == []


def test_plugins_from_the_environment(project: Path) -> None:
    settings = Settings.load(project, environ={"PLUGBOARD_PLUGINS": '["books", "auth"]'})
    assert [e.name for e in settings.plugin_entries()] == ["books", "auth"]
    assert settings.source("plugins[1]") == "env PLUGBOARD_PLUGINS"


def test_bad_variable_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path, environ={"PLUGBOARD_SERVER____PORT": "1"})
    assert problems(info)[0][0] == "PLUGBOARD_SERVER____PORT"


def test_environ_defaults_to_os_environ(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGBOARD_SERVER__PORT", "8123")
    assert Settings.load(project).get("server.port") == 8123


# -- aliases ------------------------------------------------------------------------


def test_alias_variable_sets_its_key(project: Path) -> None:
    settings = Settings.load(project, environ={"REDIS_URL": "redis://r:6379/1", "SMTP_PORT": "2525"})
    assert settings.get("redis.url") == "redis://r:6379/1"
    assert settings.get("email.smtp.port") == 2525
    assert settings.source("redis.url") == "env REDIS_URL"
    assert settings.source("email.smtp.port") == "env SMTP_PORT"


def test_alias_wins_over_files(project: Path) -> None:
    settings = Settings.load(project, env="production", environ={"AWS_S3_BUCKET": "alias-bucket"})
    assert settings.get("uploads.s3.bucket") == "alias-bucket"
    assert settings.get("uploads.s3.region") == "eu-west-1"


def test_plugboard_variable_beats_its_alias(project: Path) -> None:
    settings = Settings.load(
        project, environ={"REDIS_URL": "redis://alias", "PLUGBOARD_REDIS__URL": "redis://explicit"}
    )
    assert settings.get("redis.url") == "redis://explicit"
    assert settings.source("redis.url") == "env PLUGBOARD_REDIS__URL"


def test_whole_section_variable_beats_alias(project: Path) -> None:
    settings = Settings.load(project, environ={"REDIS_URL": "redis://alias", "PLUGBOARD_REDIS": "{url = 'redis://s'}"})
    assert settings.get("redis.url") == "redis://s"


def test_blank_alias_variable_is_unset(project: Path) -> None:
    settings = Settings.load(project, environ={"REDIS_URL": ""})
    assert settings.get("redis.url") is None
    assert settings.source("redis.url") == "settings.yaml:19"


def test_core_alias_without_env_aliases(tmp_path: Path) -> None:
    """REDIS_URL is the core's own alias: it works even when settings.yaml declares none."""
    write(tmp_path, "settings.yaml", "redis:\n  url: null\n")
    settings = Settings.load(tmp_path, environ={"REDIS_URL": "redis://r", "SMTP_HOST": "mail"})
    assert settings.get("redis.url") == "redis://r"
    assert settings.source("redis.url") == "env REDIS_URL"
    assert settings.get("email.smtp.host") is None


def test_bad_env_aliases(tmp_path: Path) -> None:
    write(tmp_path, "settings.yaml", "env_aliases:\n  REDIS_URL: 5\n  OK: redis.url\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path, environ={})
    assert problems(info) == [
        ("env_aliases.REDIS_URL", 5, "expected a dotted settings key such as redis.url", "settings.yaml:2")
    ]


def test_env_aliases_is_not_a_section(project: Path) -> None:
    settings = Settings.load(project, environ={})
    assert "env_aliases" not in settings.sections()
    assert settings.get("env_aliases")["REDIS_URL"] == "redis.url"  # names keep their case


# -- plugins ------------------------------------------------------------------------


def test_plugin_entries(project: Path) -> None:
    settings = Settings.load(project, environ={})
    assert settings.plugin_entries() == [PluginEntry("books"), PluginEntry("uploads", enabled=False)]
    assert settings.source("plugins[1]") == "settings.yaml:4"


@pytest.mark.parametrize(
    ("plugins", "key", "reason"),
    [
        (["a", "b", 5], "plugins[2]", "expected a plugin name or a mapping {name: ..., enabled: ...}"),
        (["a", {"enabled": True}], "plugins[1]", "expected 'name': the plugin's name"),
        (["a", {"name": "b", "enabled": "sometimes"}], "plugins[1]", "expected 'enabled' to be true or false"),
        (["a", {"name": "b", "on": True}], "plugins[1]", "unknown key 'on'; expected one of: name, enabled"),
        (["a", "  "], "plugins[1]", "expected a plugin name"),
        (["a", "b", {"name": "a", "enabled": False}], "plugins[2]", "plugin 'a' is declared twice (first as plugins[0])"),
    ],
)
def test_bad_plugin_entries(plugins: list, key: str, reason: str) -> None:
    settings = Settings.from_mapping({"plugins": plugins})
    with pytest.raises(ConfigError) as info:
        settings.plugin_entries()
    assert [(p.key, p.reason, p.source) for p in info.value.problems] == [(key, reason, "override")]


def test_plugins_must_be_a_list() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"plugins": "books"}).plugin_entries()
    assert problems(info) == [("plugins", "books", "expected a list of plugin names", "override")]


def test_bad_plugin_entry_source_in_file(tmp_path: Path) -> None:
    write(tmp_path, "settings.yaml", "plugins:\n  - a\n  - 7\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(tmp_path, environ={}).plugin_entries()
    assert problems(info)[0][3] == "settings.yaml:3"


def test_plugin_enabled_from_a_string() -> None:
    entries = Settings.from_mapping({"plugins": [{"name": "a", "enabled": "off"}]}).plugin_entries()
    assert entries == [PluginEntry("a", False)]


# -- overrides ----------------------------------------------------------------------


def test_from_mapping(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"Server": {"Port": 1, "dataDir": "x"}}, root=tmp_path)
    assert settings.root == tmp_path
    assert settings.section("server") == {"port": 1, "data_dir": "x"}
    assert settings.source("server.port") == "override"
    assert settings.source("server.host") == "default"


def test_with_overrides_is_a_new_object(project: Path) -> None:
    settings = Settings.load(project, environ={"PLUGBOARD_SERVER__PORT": "9000"})
    changed = settings.with_overrides({"server": {"port": 1}, "uploads": {"s3": {"region": "x"}}})
    assert changed.get("server.port") == 1
    assert changed.source("server.port") == "override"
    assert changed.get("uploads.s3") == {"bucket": "media", "region": "x"}
    assert changed.source("uploads.s3.bucket") == "settings.yaml:15"
    assert changed.root == project
    assert settings.get("server.port") == 9000  # the original is unchanged


def test_override_with_both_spellings() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"a": {"fooBar": 1, "foo_bar": 2}})
    assert problems(info) == [("a.foo_bar", 2, "both 'fooBar' and 'foo_bar' are set; keep one", "override")]


def test_section_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"server": 5}).section("server")
    assert problems(info) == [("server", 5, "expected a mapping of settings", "override")]


def test_repr_shows_sources_not_values(project: Path) -> None:
    text = repr(Settings.load(project, environ={"PLUGBOARD_REDIS__URL": "redis://:hunter2@r"}))
    assert "hunter2" not in text
    assert "env PLUGBOARD_REDIS__URL" in text


# -- with structure() ---------------------------------------------------------------


@attrs.define(frozen=True, kw_only=True)
class _S3:
    bucket: str = "b"
    region: str = "r"


@attrs.define(frozen=True, kw_only=True)
class _Uploads:
    provider: str = "local"
    max_file_size: Size = 1
    s3: _S3 = _S3()


def test_problem_message_names_the_environment_variable(project: Path) -> None:
    settings = Settings.load(project, environ={"PLUGBOARD_UPLOADS__MAX_FILE_SIZE": "10 MX"})
    with pytest.raises(ConfigError) as info:
        structure(_Uploads, settings.section("uploads"), section="uploads", source_of=settings.source)
    assert str(info.value.problems[0]) == (
        "uploads.max_file_size = '10 MX' (from env PLUGBOARD_UPLOADS__MAX_FILE_SIZE): not a size; expected e.g. '10MB'"
    )


def test_problem_message_names_file_and_line(project: Path) -> None:
    write(project, "config/production.yaml", "uploads:\n  s3:\n    bucket: b\n    regoin: x\n")
    settings = Settings.load(project, env="production", environ={})
    with pytest.raises(ConfigError) as info:
        structure(_Uploads, settings.section("uploads"), section="uploads", source_of=settings.source)
    assert [str(p) for p in info.value.problems] == [
        "uploads.s3.regoin = 'x' (from config/production.yaml:4): unknown key; expected one of: bucket, region"
    ]


def test_camel_case_seed_file_structures(project: Path) -> None:
    settings = Settings.load(project, environ={})
    config = structure(_Uploads, settings.section("uploads"), section="uploads", source_of=settings.source)
    assert config.max_file_size == 10 * 1024**2
    assert config.s3 == _S3(bucket="media", region="eu-west-1")
