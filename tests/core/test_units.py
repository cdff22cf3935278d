"""Sizes and durations as deployers write them, and the markers config classes use."""

from __future__ import annotations

import typing
from typing import Optional

import pytest

from plugboard.units import (
    DURATION,
    SECRET,
    SIZE,
    Duration,
    DurationMarker,
    Secret,
    Size,
    SizeMarker,
    parse_duration,
    parse_size,
)

SIZE_MESSAGE = "not a size; expected e.g. '10MB'"
DURATION_MESSAGE = "not a duration; expected e.g. '30s', '15m' or '1h'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1234, 1234),
        ("1234", 1234),
        ("100B", 100),
        ("100 b", 100),
        ("512KB", 512 * 1024),
        ("1KiB", 1024),
        ("1k", 1024),
        ("10MB", 10 * 1024**2),
        ("10 MB", 10 * 1024**2),
        ("10mb", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("2MiB", 2 * 1024**2),
        ("1.5GB", 3 * 1024**3 // 2),
        ("1GiB", 1024**3),
        (" 3 gb ", 3 * 1024**3),
        ("0.5KB", 512),
        ("1TB", 1024**4),
        (2048.0, 2048),
    ],
)
def test_parse_size_accepts_human_sizes(text: object, expected: int) -> None:
    result = parse_size(text)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "bad",
    ["10 MX", "ten MB", "", "MB", "-5MB", "1.2.3MB", "10iB", "10 M B", -1, True, False, None, [10], 1.5, float("inf")],
)
def test_parse_size_rejects_everything_else(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(bad)
    assert str(info.value) == SIZE_MESSAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("10S", 10.0),
        ("1m500ms", 60.5),
    ],
)
def test_parse_duration_accepts_human_durations(text: object, expected: float) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(expected)
    assert type(result) is float


@pytest.mark.parametrize(
    "bad",
    ["soon", "", "  ", "10x", "h", "1h30", "-5s", "-1", "1 hour", -3, -0.5, True, None, {"s": 1}, float("nan")],
)
def test_parse_duration_rejects_everything_else(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value) == DURATION_MESSAGE


def test_markers_are_annotated_types() -> None:
    assert typing.get_origin(Size) is typing.Annotated
    assert typing.get_args(Size) == (int, SIZE)
    assert typing.get_args(Duration) == (float, DURATION)
    assert typing.get_args(Secret) == (str, SECRET)
    assert isinstance(SIZE, SizeMarker)
    assert isinstance(DURATION, DurationMarker)
    assert SIZE != DURATION != SECRET
    assert repr(SECRET) == "SECRET"


def test_optional_secret_keeps_its_marker() -> None:
    arms = typing.get_args(Optional[Secret])
    assert arms == (Secret, type(None))
    assert typing.get_args(arms[0])[1] is SECRET
    assert typing.get_args(Secret | None)[0] == Secret
