from __future__ import annotations

import pytest

from fossamon.config import SilenceConfig, validate_section
from fossamon.matchers import parse_matchers
from fossamon.model import AlertEvent, EventKind, Severity, make_labels
from fossamon.silences import Silence, config_silence_id, first_match, silence_from_config

NOW = 1_800_000_000.0


def event(rule="latency_high", severity=Severity.WARNING, kind=EventKind.FIRING, **labels):
    return AlertEvent(
        ts=NOW,
        kind=kind,
        rule=rule,
        severity=severity,
        labels=make_labels(labels),
        value=1.0,
        threshold=0.5,
        since=NOW - 60,
        summary="",
    )


def silence(*matchers, sid="s1", starts=NOW - 60, until=NOW + 60):
    return Silence(sid, parse_matchers(matchers), starts, until, "why", "ops", starts)


class TestMatching:
    @pytest.mark.parametrize(
        ("matcher", "labels", "expected"),
        [
            ('endpoint="api"', {"endpoint": "api"}, True),
            ('endpoint="api"', {"endpoint": "web"}, False),
            ('endpoint!="api"', {"endpoint": "web"}, True),
            ('endpoint!="api"', {"endpoint": "api"}, False),
            ('endpoint=~"api|web"', {"endpoint": "web"}, True),
            ('endpoint=~"api"', {"endpoint": "api-v2"}, False),  # anchored at both ends
            ('endpoint=~"api"', {"endpoint": "v2-api"}, False),
            ('endpoint=~"api.*"', {"endpoint": "api-v2"}, True),
            ('endpoint!~"api.*"', {"endpoint": "api-v2"}, False),
            ('endpoint!~"api.*"', {"endpoint": "web"}, True),
            # a missing label is the empty value, as in Alertmanager
            ('team=""', {}, True),
            ('team!=""', {}, False),
            ('team=~".+"', {}, False),
            ('team!~".+"', {}, True),
            ('team="ops"', {}, False),
        ],
    )
    def test_operators(self, matcher, labels, expected):
        assert silence(matcher).matches(event(**labels)) is expected

    def test_every_matcher_must_match(self):
        both = silence('endpoint="api"', 'severity="critical"')
        assert not both.matches(event(endpoint="api"))
        assert both.matches(event(severity=Severity.CRITICAL, endpoint="api"))

    def test_pseudo_labels_alertname_rule_and_severity(self):
        assert silence('alertname="disk_full"').matches(event(rule="disk_full"))
        assert silence('rule="disk_full"').matches(event(rule="disk_full"))
        assert not silence('rule="disk_full"').matches(event(rule="cpu_high"))
        assert silence("severity=warning").matches(event())

    def test_a_resolved_event_carries_the_severity_that_fired(self):
        resolved = event(severity=Severity.CRITICAL, kind=EventKind.RESOLVED)
        assert silence('severity="critical"').matches(resolved)


class TestTime:
    def test_pending_active_expired(self):
        s = silence('rule="x"', starts=NOW, until=NOW + 10)
        assert [s.state(t) for t in (NOW - 1, NOW, NOW + 9.9, NOW + 10)] == [
            "pending",
            "active",
            "active",
            "expired",
        ]
        assert s.active(NOW)
        assert not s.active(NOW + 10)

    def test_expiring_ends_it_early(self):
        s = silence('rule="x"', until=NOW + 100).expired(NOW + 5)
        assert s.active(NOW + 4)
        assert not s.active(NOW + 5)
        assert s.ends == NOW + 5


class TestFirstMatch:
    def test_the_first_matching_in_order(self):
        silences = [
            silence('rule="other"', sid="a"),
            silence('endpoint="api"', sid="b"),
            silence('rule=~"lat.*"', sid="c"),
        ]
        found = first_match(silences, event(endpoint="api"))
        assert found is not None
        assert found.id == "b"
        assert first_match(silences[:1], event()) is None

    def test_with_now_an_inactive_silence_is_skipped(self):
        silences = [silence('endpoint="api"', sid="old", until=NOW), silence("endpoint=api")]
        assert first_match(silences, event(endpoint="api")).id == "old"
        assert first_match(silences, event(endpoint="api"), now=NOW).id == "s1"


class TestFromConfig:
    def make(self, **changes):
        fields = {"matchers": ['rule="a"'], "until": "2099-01-01T00:00:00Z", "comment": "c"}
        return validate_section(SilenceConfig, {**fields, **changes})

    def test_id_is_stable_and_follows_the_content(self):
        assert config_silence_id(self.make()) == config_silence_id(self.make())
        assert len(config_silence_id(self.make())) == 12
        others = [
            self.make(matchers=['rule="b"']),
            self.make(until="2099-01-02T00:00:00Z"),
            self.make(comment="d"),
            self.make(starts="2098-01-01T00:00:00Z"),
        ]
        ids = {config_silence_id(c) for c in [self.make(), *others]}
        assert len(ids) == 5

    def test_fields(self):
        s = silence_from_config(self.make(created_by="alice"), NOW)
        assert s.source == "config"
        assert s.starts == NOW  # no "starts": from when it was loaded
        assert s.matcher_texts == ('rule="a"',)
        assert s.created_by == "alice"
        assert s.matches(event(rule="a"))
