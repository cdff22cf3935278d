"""structure(): settings mappings into attrs instances, with every problem named at once."""

from __future__ import annotations

import enum
from typing import Literal, Optional

import attrs
import pytest

from plugboard.config import iter_fields, normalize_key, parse_bool, structure, unstructure
from plugboard.errors import ConfigError
from plugboard.units import Duration, Secret, Size


def _port(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("expected a port between 0 and 65535")


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError("expected a positive number")


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@attrs.define(frozen=True, kw_only=True)
class S3Config:
    bucket: str
    region: str = "us-east-1"
    access_key_id: Optional[Secret] = None
    secret_access_key: Secret | None = None


@attrs.define(frozen=True, kw_only=True)
class ImageOptimization:
    enabled: bool = False
    quality: int = 80


@attrs.define(frozen=True, kw_only=True)
class UploadsConfig:
    provider: Literal["local", "s3"] = "local"
    max_file_size: Size = attrs.field(default=10 * 1024**2, validator=_positive)
    ttl: Duration = 3600.0
    max_files: int = attrs.field(default=10, validator=_positive)
    image_optimization: ImageOptimization = ImageOptimization()
    s3: Optional[S3Config] = None
    allowed_types: list[str] = attrs.Factory(lambda: ["image/png"])
    quotas: dict[str, Size] = attrs.Factory(dict)
    level: Level = Level.LOW
    ratio: float = 0.5


@attrs.define(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    debug: bool = False
    admin_token: Optional[Secret] = None


@attrs.define(frozen=True, kw_only=True)
class WithRequired:
    name: str
    nested: S3Config


@attrs.define(frozen=True, kw_only=True)
class Window:
    start: int = 0
    end: int = 10

    def __attrs_post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("end must not be before start")


@attrs.define(frozen=True, kw_only=True)
class Mixed:
    limit: int | str = 5
    anything: object = None
    pair: tuple[int, int] = (0, 0)
    delay: Optional[Duration] = None


def sources(key: str) -> str:
    return f"src:{key}"


def problems_of(cls: type, data: dict, section: str = "uploads") -> list[tuple[str, object, str, str]]:
    with pytest.raises(ConfigError) as info:
        structure(cls, data, section=section, source_of=sources)
    return [(p.key, p.value, p.reason, p.source) for p in info.value.problems]


# -- happy paths ------------------------------------------------------------------


def test_defaults_from_an_empty_mapping() -> None:
    config = structure(UploadsConfig, {}, section="uploads", source_of=sources)
    assert config == UploadsConfig()
    assert structure(UploadsConfig, None, section="uploads", source_of=sources) == UploadsConfig()


def test_values_of_every_kind_are_converted() -> None:
    config = structure(
        UploadsConfig,
        {
            "provider": "s3",
            "max_file_size": "2MB",
            "ttl": "1h30m",
            "max_files": "5",
            "image_optimization": {"enabled": "yes", "quality": 90},
            "s3": {"bucket": "media", "secret_access_key": "shh"},
            "allowed_types": ["image/png", "image/jpeg"],
            "quotas": {"alice": "1GB"},
            "level": "high",
            "ratio": "0.25",
        },
        section="uploads",
        source_of=sources,
    )
    assert config.provider == "s3"
    assert config.max_file_size == 2 * 1024**2
    assert config.ttl == 5400.0
    assert config.max_files == 5
    assert config.image_optimization == ImageOptimization(enabled=True, quality=90)
    assert config.s3 == S3Config(bucket="media", secret_access_key="shh")
    assert config.allowed_types == ["image/png", "image/jpeg"]
    assert config.quotas == {"alice": 1024**3}
    assert config.level is Level.HIGH
    assert config.ratio == 0.25


def test_keys_in_any_case_and_camel_case_aliases() -> None:
    config = structure(
        UploadsConfig,
        {"MAX_FILE_SIZE": "1MB", "imageOptimization": {"Enabled": True}, "maxFiles": 3, "TTL": 5},
        section="uploads",
        source_of=sources,
    )
    assert config.max_file_size == 1024**2
    assert config.image_optimization.enabled is True
    assert config.max_files == 3
    assert config.ttl == 5.0


def test_a_mapping_subclass_is_a_mapping() -> None:
    class Box(dict):
        pass

    config = structure(ServerConfig, Box(port=9000, debug="on"), section="server", source_of=sources)
    assert (config.port, config.debug) == (9000, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(True, True), ("true", True), ("Yes", True), ("on", True), ("1", True), (1, True),
     (False, False), ("false", False), ("NO", False), ("off", False), ("0", False), (0, False)],
)
def test_booleans_from_yaml_and_environment(raw: object, expected: bool) -> None:
    assert structure(ServerConfig, {"debug": raw}, section="server", source_of=sources).debug is expected
    assert parse_bool(raw) is expected


def test_null_section_for_a_nested_class_means_defaults() -> None:
    config = structure(UploadsConfig, {"image_optimization": None}, section="uploads", source_of=sources)
    assert config.image_optimization == ImageOptimization()


def test_optional_fields_take_null() -> None:
    config = structure(ServerConfig, {"admin_token": None}, section="server", source_of=sources)
    assert config.admin_token is None
    assert structure(Mixed, {"delay": ""}, section="m", source_of=sources).delay is None
    assert structure(Mixed, {"delay": "2s"}, section="m", source_of=sources).delay == 2.0


def test_union_prefers_the_exact_type_and_tuple_lengths() -> None:
    assert structure(Mixed, {"limit": "5"}, section="m", source_of=sources).limit == "5"
    assert structure(Mixed, {"limit": 7}, section="m", source_of=sources).limit == 7
    assert structure(Mixed, {"anything": {"a": [1]}}, section="m", source_of=sources).anything == {"a": [1]}
    assert structure(Mixed, {"pair": ["1", 2]}, section="m", source_of=sources).pair == (1, 2)
    assert problems_of(Mixed, {"pair": [1, 2, 3]}, "m") == [("m.pair", [1, 2, 3], "expected a list of 2 items", "src:m.pair")]
    assert problems_of(Mixed, {"limit": [1]}, "m") == [("m.limit", [1], "expected an integer or a string", "src:m.limit")]


def test_numbers_given_for_a_string_become_text() -> None:
    assert structure(ServerConfig, {"host": 12345}, section="server", source_of=sources).host == "12345"


def test_source_of_is_optional() -> None:
    with pytest.raises(ConfigError) as info:
        structure(ServerConfig, {"port": "x"}, section="server")
    assert info.value.problems[0].source == "override"


def test_not_an_attrs_class_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        structure(dict, {}, section="x", source_of=sources)


# -- problems ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"port": "eighty"}, "server.port", "expected an integer"),
        ({"port": 80.5}, "server.port", "expected an integer"),
        ({"port": True}, "server.port", "expected an integer"),
        ({"port": [80]}, "server.port", "expected an integer"),
        ({"debug": "maybe"}, "server.debug", "expected true or false"),
        ({"debug": 2}, "server.debug", "expected true or false"),
        ({"host": ["a"]}, "server.host", "expected a string"),
        ({"host": True}, "server.host", "expected a string"),
        ({"host": None}, "server.host", "expected a string"),
    ],
)
def test_wrong_types(data: dict, key: str, reason: str) -> None:
    [value] = data.values()
    assert problems_of(ServerConfig, data, "server") == [(key, value, reason, f"src:{key}")]


def test_wrong_types_in_collections_and_nested_classes() -> None:
    got = problems_of(
        UploadsConfig,
        {
            "allowed_types": "image/png",
            "quotas": {"bob": "lots"},
            "image_optimization": "on",
            "ratio": "fast",
        },
    )
    assert got == [
        ("uploads.image_optimization", "on", "expected a mapping", "src:uploads.image_optimization"),
        ("uploads.allowed_types", "image/png", "expected a list", "src:uploads.allowed_types"),
        ("uploads.quotas.bob", "lots", "not a size; expected e.g. '10MB'", "src:uploads.quotas.bob"),
        ("uploads.ratio", "fast", "expected a number", "src:uploads.ratio"),
    ]


def test_list_items_are_named_by_index() -> None:
    assert problems_of(UploadsConfig, {"allowed_types": ["a", ["b"]]}) == [
        ("uploads.allowed_types[1]", ["b"], "expected a string", "src:uploads.allowed_types[1]")
    ]


def test_unknown_key_lists_the_known_ones() -> None:
    assert problems_of(ServerConfig, {"prot": 80}, "server") == [
        ("server.prot", 80, "unknown key; expected one of: host, port, debug, admin_token", "src:server.prot")
    ]


def test_unknown_nested_key() -> None:
    assert problems_of(UploadsConfig, {"image_optimization": {"qualty": 50}}) == [
        (
            "uploads.image_optimization.qualty",
            50,
            "unknown key; expected one of: enabled, quality",
            "src:uploads.image_optimization.qualty",
        )
    ]


def test_unknown_key_that_looks_like_a_secret_is_masked() -> None:
    got = problems_of(UploadsConfig, {"s3": {"bucket": "b", "secret_acess_key": "AKIA-SECRET"}})
    assert got[0][:2] == ("uploads.s3.secret_acess_key", "***")
    with pytest.raises(ConfigError) as info:
        structure(UploadsConfig, {"s3": {"bucket": "b", "secret_acess_key": "AKIA-SECRET"}}, section="uploads", source_of=sources)
    assert "AKIA-SECRET" not in str(info.value)


def test_bad_literal_and_enum_choices() -> None:
    assert problems_of(UploadsConfig, {"provider": "ftp", "level": "max"}) == [
        ("uploads.provider", "ftp", "expected one of 'local', 's3'", "src:uploads.provider"),
        ("uploads.level", "max", "expected one of 'low', 'high'", "src:uploads.level"),
    ]


def test_enum_by_member_name() -> None:
    assert structure(UploadsConfig, {"level": "HIGH"}, section="uploads", source_of=sources).level is Level.HIGH


def test_bad_size_and_duration() -> None:
    assert problems_of(UploadsConfig, {"maxFileSize": "10 MX", "ttl": "soon"}) == [
        ("uploads.max_file_size", "10 MX", "not a size; expected e.g. '10MB'", "src:uploads.max_file_size"),
        ("uploads.ttl", "soon", "not a duration; expected e.g. '30s', '15m' or '1h'", "src:uploads.ttl"),
    ]


def test_validator_failure_uses_its_message() -> None:
    assert problems_of(ServerConfig, {"port": 70000}, "server") == [
        ("server.port", 70000, "expected a port between 0 and 65535", "src:server.port")
    ]


def test_every_failing_validator_is_named() -> None:
    got = problems_of(UploadsConfig, {"max_files": 0, "max_file_size": 0})
    assert {(k, r) for k, _, r, _ in got} == {
        ("uploads.max_files", "expected a positive number"),
        ("uploads.max_file_size", "expected a positive number"),
    }


def test_validators_still_run_when_another_field_is_wrong() -> None:
    got = problems_of(ServerConfig, {"port": 70000, "debug": "maybe"}, "server")
    assert [(k, r) for k, _, r, _ in got] == [
        ("server.debug", "expected true or false"),
        ("server.port", "expected a port between 0 and 65535"),
    ]


def test_post_init_failure_is_reported_against_the_section() -> None:
    assert problems_of(Window, {"start": 5, "end": 1}, "window") == [
        ("window", "...", "end must not be before start", "src:window")
    ]


def test_missing_required_fields() -> None:
    got = problems_of(WithRequired, {}, "thing")
    assert got == [
        ("thing.name", None, "required", "src:thing.name"),
        ("thing.nested.bucket", None, "required", "src:thing.nested.bucket"),
    ]


def test_secret_is_masked_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        structure(ServerConfig, {"admin_token": ["hunter2"]}, section="server", source_of=sources)
    [problem] = info.value.problems
    assert (problem.key, problem.value, problem.reason) == ("server.admin_token", "***", "expected a string")
    assert "hunter2" not in str(info.value)
    assert str(problem) == "server.admin_token = '***' (from src:server.admin_token): expected a string"


def test_secret_inside_optional_nested_class_is_masked() -> None:
    got = problems_of(UploadsConfig, {"s3": {"bucket": "b", "access_key_id": {"x": "AKIA"}}})
    assert got == [("uploads.s3.access_key_id", "***", "expected a string", "src:uploads.s3.access_key_id")]


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        structure(
            UploadsConfig,
            {"provider": "ftp", "max_file_size": "10 MX", "bogus": 1, "s3": {"region": 5}},
            section="uploads",
            source_of=sources,
        )
    keys = [p.key for p in info.value.problems]
    assert keys == ["uploads.bogus", "uploads.provider", "uploads.max_file_size", "uploads.s3.bucket"]
    text = str(info.value)
    assert text.startswith("Invalid settings:\n")
    assert "  - uploads.max_file_size = '10 MX' (from src:uploads.max_file_size): not a size; expected e.g. '10MB'" in text


def test_camel_and_snake_spelling_at_once_is_an_error() -> None:
    assert problems_of(UploadsConfig, {"maxFileSize": "1MB", "max_file_size": "2MB"}) == [
        (
            "uploads.max_file_size",
            "2MB",
            "both 'maxFileSize' and 'max_file_size' are set; keep one",
            "src:uploads.max_file_size",
        )
    ]


def test_section_must_be_a_mapping() -> None:
    assert problems_of(ServerConfig, ["a"], "server") == [("server", ["a"], "expected a mapping", "src:server")]


# -- unstructure and iter_fields ----------------------------------------------------


def test_unstructure_plain_data_and_masking() -> None:
    config = UploadsConfig(s3=S3Config(bucket="b", secret_access_key="shh"), level=Level.HIGH)
    plain = unstructure(config)
    assert plain["s3"] == {"bucket": "b", "region": "us-east-1", "access_key_id": None, "secret_access_key": "shh"}
    assert plain["level"] == "high"
    assert plain["image_optimization"] == {"enabled": False, "quality": 80}
    masked = unstructure(config, mask=True)
    assert masked["s3"]["secret_access_key"] == "***"
    assert masked["s3"]["access_key_id"] is None  # unset secrets stay visibly unset
    # the round trip gives the same instance back
    assert structure(UploadsConfig, plain, section="uploads", source_of=sources) == config


def test_iter_fields_expands_nested_classes() -> None:
    rows = iter_fields(ServerConfig, "server")
    assert rows == [
        ("server.host", "127.0.0.1", False),
        ("server.port", 8000, False),
        ("server.debug", False, False),
        ("server.admin_token", None, True),
    ]
    keys = [key for key, _, _ in iter_fields(UploadsConfig, "uploads")]
    assert "uploads.image_optimization.quality" in keys
    assert "uploads.s3" in keys  # an optional nested class is one key
    assert dict((k, d) for k, d, _ in iter_fields(UploadsConfig, "uploads"))["uploads.allowed_types"] == ["image/png"]
    assert iter_fields(WithRequired, "w")[0] == ("w.name", attrs.NOTHING, False)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("maxFileSize", "max_file_size"), ("MAX_FILE_SIZE", "max_file_size"), ("windowMs", "window_ms"),
     ("serverSentEvents", "server_sent_events"), ("HTTPServer", "http_server"), ("s3", "s3")],
)
def test_normalize_key(key: str, expected: str) -> None:
    assert normalize_key(key) == expected
