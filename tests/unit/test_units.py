from __future__ import annotations

import pytest

from fossamon.units import format_bytes, format_duration, format_value, parse_duration, parse_size


class TestParse:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("0", 0.0), ("250ms", 0.25), ("1.5s", 1.5), ("2w", 1_209_600), ("1d2h3m4s", 93_784)],
    )
    def test_duration(self, text, seconds):
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "5", "5 s", "s", "5x", "1h 30m", "-1s", "5S"])
    def test_bad_duration(self, text):
        with pytest.raises(ValueError, match=r"duration|negative"):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("text", "size"),
        [
            ("0", 0),
            ("10B", 10),
            ("64KB", 64000),
            ("64kb", 64000),
            ("1.5MB", 1500000),
            ("1KiB", 1024),
            ("2GiB", 2 << 30),
        ],
    )
    def test_size(self, text, size):
        assert parse_size(text) == size

    @pytest.mark.parametrize("text", ["", "MB", "5 parsecs", "-1MB", "1e3"])
    def test_bad_size(self, text):
        with pytest.raises(ValueError, match=r"size|negative"):
            parse_size(text)


class TestFormat:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (5e-07, "0.5µs"),
            (0.0123, "12.3ms"),
            (0.5, "500ms"),
            (1.25, "1.25s"),
            (300, "5m"),
            (3600, "1h"),
            (259200, "3d"),
        ],
    )
    def test_duration(self, seconds, text):
        assert format_duration(seconds) == text

    def test_bytes(self):
        assert format_bytes(512) == "512 B"
        assert format_bytes(1536) == "1.5 KiB"
        assert format_bytes(3 << 30) == "3.0 GiB"

    def test_value_by_metric_name(self):
        assert format_value("api_response_seconds", 0.0421) == "42.1ms"
        assert format_value("system_disk_free_bytes", 2048) == "2.0 KiB"
        assert format_value("system_cpu_percent", 12.345) == "12.3 %"
        assert format_value("api_up", 1.0) == "1"
        assert format_value("system_load1", 0.123456) == "0.1235"


def test_non_finite_values_format_without_raising():
    assert format_value("db_query_value", float("inf")) == "inf"
    assert format_value("api_response_seconds", float("-inf")) == "-inf"
    assert format_value("system_disk_free_bytes", float("nan")) == "nan"
