"""Service windows (pure): serving at a given local time, and the next moment that changes."""

from __future__ import annotations

from datetime import datetime

import pytest

from fairpool.config import ConfigError, load_node_config
from fairpool.nodes.servehours import describe, next_change, serving

NIGHT = ((18 * 60, 8 * 60),)  # 18:00-08:00, past midnight
OFFICE = ((8 * 60, 12 * 60), (13 * 60, 17 * 60))  # 08:00-12:00,13:00-17:00


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2024-03-14T{text}")


def windows(text: str) -> tuple[tuple[int, int], ...]:
    return load_node_config(None, {"serve_hours": text}).serve_hours


@pytest.mark.parametrize(("clock", "expected"), [
    ("17:59:59", False), ("18:00:00", True), ("23:59:59", True), ("00:00:00", True),
    ("07:59:59", True), ("08:00:00", False), ("12:00:00", False),
])
def test_a_window_past_midnight_serves_from_its_start_until_its_end(clock: str, expected: bool) -> None:
    assert serving(NIGHT, at(clock)) is expected


@pytest.mark.parametrize(("clock", "expected"), [
    ("07:59", False), ("08:00", True), ("11:59", True), ("12:00", False), ("12:30", False),
    ("13:00", True), ("17:00", False),
])
def test_several_windows_serve_in_each_of_them(clock: str, expected: bool) -> None:
    assert serving(OFFICE, at(clock)) is expected


def test_no_windows_means_always_serving_and_never_changing() -> None:
    assert serving((), at("03:00"))
    assert next_change((), at("03:00")) is None


def test_the_whole_day_never_changes() -> None:
    assert serving(windows("00:00-24:00"), at("23:59:59"))
    assert next_change(windows("00:00-24:00"), at("12:00")) is None


def test_next_change_inside_a_window_is_its_end() -> None:
    assert next_change(NIGHT, at("20:00")) == datetime.fromisoformat("2024-03-15T08:00")
    assert next_change(NIGHT, at("03:00")) == at("08:00")


def test_next_change_outside_a_window_is_the_next_start() -> None:
    assert next_change(NIGHT, at("08:00")) == at("18:00")
    assert next_change(OFFICE, at("12:15")) == at("13:00")
    assert next_change(OFFICE, at("17:30")) == datetime.fromisoformat("2024-03-15T08:00")


def test_a_boundary_inside_an_overlapping_window_is_no_change() -> None:
    overlapping = windows("08:00-12:00,10:00-14:00")
    assert next_change(overlapping, at("09:00")) == at("14:00")


def test_a_window_ending_at_24_00_ends_at_midnight() -> None:
    late = windows("22:00-24:00")
    assert serving(late, at("23:30")) and not serving(late, at("00:00"))
    assert next_change(late, at("23:30")) == datetime.fromisoformat("2024-03-15T00:00")


def test_windows_are_written_back_as_the_user_wrote_them() -> None:
    assert describe(windows("18:00-08:00, 8:00-9:30")) == "18:00-08:00,08:00-09:30"
    assert describe(()) == "always"


@pytest.mark.parametrize("text", ["18-08", "25:00-08:00", "08:00-24:01", "08:60-09:00", "09:00-09:00",
                                  "08:00-12:00,", "08:00"])
def test_bad_windows_are_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--serve-hours"):
        windows(text)
