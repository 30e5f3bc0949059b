from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fossamon.config import (
    Config,
    RuleConfig,
    default_config_path,
    load_config,
    parse_config,
    validate_section,
)
from fossamon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

API = """
[collectors.api]
base_url = "http://127.0.0.1:8000"
[[collectors.api.endpoints]]
name = "health"
path = "/api/health"
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", env=env or {})
    return [str(p) for p in caught.value.problems]


class TestDefaults:
    def test_empty_file_gives_system_collector_only(self):
        config = parse_config("", env={})
        assert config.collectors.system.enabled
        assert config.collectors.system.interval == 10.0
        assert config.collectors.api is None
        assert config.collectors.db is None
        assert config.rules == []

    def test_shipped_config_is_valid_and_has_the_runbook_kpis(self):
        config = load_config(REPO / "config.toml", env={})
        rules = {rule.name: rule for rule in config.rules}
        assert rules["api_p95_latency"].aggregate == "p95"
        assert (rules["api_p95_latency"].warning, rules["api_p95_latency"].critical) == (0.5, 2.0)
        assert (rules["db_query_slow"].warning, rules["db_query_slow"].critical) == (0.1, 0.5)
        assert rules["db_query_slow"].aggregate == "avg"
        assert (rules["cpu_high"].warning, rules["cpu_high"].critical) == (60, 80)
        assert (rules["memory_high"].warning, rules["memory_high"].critical) == (70, 85)
        assert (rules["disk_full"].warning, rules["disk_full"].critical) == (70, 85)
        for down in ("api_down", "db_down"):
            assert rules[down].direction == "below"
            assert rules[down].critical == 1
            assert rules[down].warning is None
        assert config.collectors.api is not None
        auth = config.collectors.api.endpoints[1]
        assert auth.json_body == {"token": "probe"}  # ${FOSSAMON_PROBE_TOKEN:-probe}

    def test_config_is_immutable(self):
        config = parse_config(API, env={})
        with pytest.raises(AttributeError, match="immutable"):
            config.collectors.system.interval = 1.0  # type: ignore[misc]


class TestUnits:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("250ms", 0.25), ("15s", 15), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1h30m", 5400)],
    )
    def test_durations(self, text, seconds):
        config = parse_config(f'[collectors.system]\ninterval = "{text}"', env={})
        assert config.collectors.system.interval == seconds

    @pytest.mark.parametrize(
        ("text", "size"),
        [('"64KB"', 64_000), ('"50MB"', 50_000_000), ('"1MiB"', 1 << 20), ("4096", 4096)],
    )
    def test_sizes(self, text, size):
        section = API.replace("[[collectors", f"max_body = {text}\n[[collectors", 1)
        config = parse_config(section, env={})
        assert config.collectors.api is not None
        assert config.collectors.api.max_body == size

    def test_bare_number_duration_is_refused_with_a_hint(self):
        found = problems("[collectors.system]\ninterval = 10")
        assert found == [
            (
                "test.toml: collectors.system.interval: expected a duration such as "
                '"250ms", "15s", "5m", "1h" or "1d" (with a unit: write "10s"), got 10'
            )
        ]

    def test_negative_interval(self):
        assert problems('[collectors.system]\ninterval = "-5s"') == [
            "test.toml: collectors.system.interval: must not be negative, got '-5s'"
        ]

    def test_too_short_interval(self):
        (found,) = problems('[collectors.system]\ninterval = "1ms"')
        assert "collectors.system.interval: must be at least 100ms" in found

    def test_bad_size(self):
        text = API.replace(
            'base_url = "http://127.0.0.1:8000"', 'base_url = "http://a:1"\nmax_body = "lots"'
        )
        (found,) = problems(text)
        assert found.startswith("test.toml: collectors.api.max_body: expected a size such as")


class TestErrorsNameTheKeyPath:
    def test_unknown_key_with_suggestion(self):
        assert problems('[collectors.system]\nintervall = "5s"') == [
            'test.toml: collectors.system.intervall: unknown key (did you mean "interval"?)'
        ]

    def test_unknown_key_without_a_close_match_lists_the_known_ones(self):
        (found,) = problems("[daemon]\nfrobnicate = 1")
        assert found.startswith("test.toml: daemon.frobnicate: unknown key (known keys: state_dir")

    def test_unknown_section(self):
        (found,) = problems("[colectors.system]\n")
        assert found == 'test.toml: colectors: unknown key (did you mean "collectors"?)'

    def test_key_path_into_a_list(self):
        text = API + '[[collectors.api.endpoints]]\nname = "b"\npath = "/b"\ntimeout = "ten"\n'
        (found,) = problems(text)
        assert found.startswith(
            "test.toml: collectors.api.endpoints[1].timeout: expected a duration"
        )
        assert "got 'ten'" in found

    def test_wrong_type(self):
        (found,) = problems('[collectors.system]\nper_cpu = "yes"')
        assert (
            found
            == "test.toml: collectors.system.per_cpu: input should be a valid boolean, got 'yes'"
        )

    def test_string_is_not_coerced_to_a_number(self):
        (found,) = problems(API.replace("[[collectors", 'max_concurrency = "10"\n[[collectors', 1))
        assert "collectors.api.max_concurrency" in found
        assert "valid integer" in found

    def test_bad_choice_lists_the_choices(self):
        (found,) = problems('[daemon]\nlog_level = "verbose"')
        assert found == (
            "test.toml: daemon.log_level: input should be 'debug', 'info', 'warning' or 'error', "
            "got 'verbose'"
        )

    def test_missing_required_key(self):
        (found,) = problems("[collectors.db]\n")
        assert found == "test.toml: collectors.db.path: required key is missing"

    def test_every_problem_is_reported_at_once(self):
        found = problems(
            '[daemon]\nlog_level = "x"\nbogus = 1\n[collectors.system]\ninterval = "x"'
        )
        assert len(found) == 3

    def test_invalid_toml_names_line_and_column(self):
        (found,) = problems("[daemon\nlog_level = 1")
        assert found.startswith("test.toml: invalid TOML: ")
        assert "line 1" in found

    def test_bad_regex(self):
        (found,) = problems(API + 'body_regex = "(unclosed"\n')
        assert "collectors.api.endpoints[0].body_regex: not a valid regular expression" in found

    def test_bad_status_code(self):
        (found,) = problems(API + "expect_status = [200, 999]\n")
        assert "collectors.api.endpoints[0].expect_status[1]" in found


class TestCrossFieldChecks:
    def test_path_needs_base_url(self):
        text = '[collectors.api]\n[[collectors.api.endpoints]]\nname = "a"\npath = "/x"\n'
        assert problems(text) == [
            (
                'test.toml: collectors.api.endpoints[0].path: "path" needs collectors.api.base_url '
                '(or use "url")'
            )
        ]

    def test_path_and_url_are_exclusive(self):
        (found,) = problems(API + 'url = "http://127.0.0.1:1/x"\n')
        assert 'collectors.api.endpoints[0]: give exactly one of "path"' in found

    def test_duplicate_endpoint_names(self):
        (found,) = problems(API + '[[collectors.api.endpoints]]\nname = "health"\npath = "/h"\n')
        assert found == 'test.toml: collectors.api.endpoints[1].name: duplicate name "health"'

    def test_url_must_be_http(self):
        text = '[collectors.api]\n[[collectors.api.endpoints]]\nname = "a"\nurl = "ftp://x/y"\n'
        (found,) = problems(text)
        assert "collectors.api.endpoints[0].url: expected an http:// or https:// URL" in found

    def test_endpoint_list_may_not_be_empty(self):
        (found,) = problems('[collectors.api]\nbase_url = "http://a:1"\nendpoints = []')
        assert found.startswith("test.toml: collectors.api.endpoints: ")

    def test_rule_without_levels(self):
        (found,) = problems('[[rules]]\nname = "r"\nmetric = "api_up"\n')
        assert found == 'test.toml: rules[0]: give "warning", "critical" or both'

    def test_rule_levels_out_of_order(self):
        (found,) = problems('[[rules]]\nname = "r"\nmetric = "m"\nwarning = 90\ncritical = 80\n')
        assert found.startswith('test.toml: rules[0].warning: must be at most "critical" (80)')

    def test_rule_below_levels_order(self):
        text = '[[rules]]\nname = "r"\nmetric = "m"\ndirection = "below"\n'
        text += "warning = 10\ncritical = 20\n"
        (found,) = problems(text)
        assert 'must be at least "critical" (20)' in found

    def test_clear_on_the_wrong_side(self):
        (found,) = problems('[[rules]]\nname = "r"\nmetric = "m"\nwarning = 60\nclear = 70\n')
        assert found.startswith(
            "test.toml: rules[0].clear: must be at or below the warning level (60)"
        )

    def test_aggregate_needs_window(self):
        (found,) = problems('[[rules]]\nname = "r"\nmetric = "m"\naggregate = "avg"\nwarning = 1\n')
        assert found == 'test.toml: rules[0].window: aggregate "avg" needs a window'

    def test_duration_thresholds(self):
        config = parse_config(
            '[[rules]]\nname = "r"\nmetric = "api_response_seconds"\nwarning = "500ms"\n'
            'critical = "2s"\nfor = "1m"\n',
            env={},
        )
        rule = config.rules[0]
        assert (rule.warning, rule.critical, rule.for_) == (0.5, 2.0, 60.0)

    def test_duplicate_rule_names(self):
        rule = '[[rules]]\nname = "r"\nmetric = "m"\nwarning = 1\n'
        assert problems(rule + rule) == ['test.toml: rules[1].name: duplicate name "r"']


class TestUrlCredentialsAndAnAuthorizationHeader:
    """Both would say who we are; aiohttp refuses such a request, so the config does."""

    @pytest.mark.parametrize(
        ("collector", "endpoint"),
        [
            ('base_url = "http://u:p@127.0.0.1:1"\n', 'headers = { authorization = "Bearer t" }\n'),
            ('headers = { Authorization = "Bearer t" }\n', 'url = "http://u:p@127.0.0.1:1/x"\n'),
            ("", 'url = "http://u@127.0.0.1:1/x"\nheaders = { AUTHORIZATION = "Basic x" }\n'),
        ],
    )
    def test_refused_naming_the_endpoint(self, collector, endpoint):
        (found,) = problems(
            f'[collectors.api]\n{collector}[[collectors.api.endpoints]]\nname = "e"\n'
            f'path = "/x"\n{endpoint}'
        )
        assert found == (
            "test.toml: collectors.api: endpoints[0] (e): the URL carries credentials "
            "(user:password@) and an Authorization header is set too; keep one"
        )

    def test_either_alone_is_fine(self):
        one = '[collectors.api]\nbase_url = "http://u:p@127.0.0.1:1"\n'
        one += '[[collectors.api.endpoints]]\nname = "e"\npath = "/x"\n'
        assert parse_config(one, env={}).collectors.api is not None
        other = '[collectors.api]\nbase_url = "http://127.0.0.1:1"\n'
        other += '[[collectors.api.endpoints]]\nname = "e"\npath = "/x"\n'
        other += 'headers = { Authorization = "Bearer t" }\n'
        assert parse_config(other, env={}).collectors.api is not None


class TestEnvironment:
    def test_set_variable(self):
        config = parse_config('[daemon]\nhostname = "${HOST_X}"', env={"HOST_X": "web-1"})
        assert config.daemon.hostname == "web-1"

    def test_default_when_unset_or_empty(self):
        text = '[daemon]\nhostname = "${HOST_X:-fallback}"'
        assert parse_config(text, env={}).daemon.hostname == "fallback"
        assert parse_config(text, env={"HOST_X": ""}).daemon.hostname == "fallback"

    def test_dash_without_colon_keeps_empty(self):
        text = '[daemon]\nhostname = "a${HOST_X-fallback}b"'
        assert parse_config(text, env={"HOST_X": ""}).daemon.hostname == "ab"
        assert parse_config(text, env={}).daemon.hostname == "afallbackb"

    def test_unset_without_default_is_an_error_naming_key_and_variable(self):
        found = problems(API + 'headers = { Authorization = "Bearer ${API_TOKEN}" }\n')
        assert found == [
            (
                "test.toml: collectors.api.endpoints[0].headers.Authorization: environment "
                "variable API_TOKEN is not set (write ${API_TOKEN:-default} to give one)"
            )
        ]

    def test_dollar_escape(self):
        config = parse_config('[daemon]\nhostname = "cost$$5"', env={})
        assert config.daemon.hostname == "cost$5"

    def test_substitution_happens_in_values_not_in_toml_syntax(self):
        # A value with quotes must not be able to inject TOML.
        config = parse_config('[daemon]\nhostname = "${X}"', env={"X": 'a"\nlog_level = "debug'})
        assert config.daemon.log_level == "info"


class TestFiles:
    def test_relative_paths_are_relative_to_the_config_file(self, tmp_path):
        conf = tmp_path / "etc" / "fossamon.toml"
        conf.parent.mkdir()
        conf.write_text(
            '[output.metrics]\npath = "out/m.jsonl"\n[collectors.db]\npath = "app.db"\n'
        )
        config = load_config(conf, env={})
        assert config.output.metrics.path == str(tmp_path / "etc" / "out" / "m.jsonl")
        assert config.collectors.db is not None
        assert config.collectors.db.path == str(tmp_path / "etc" / "app.db")

    def test_missing_file(self, tmp_path):
        with pytest.raises(ConfigError, match="no such file"):
            load_config(tmp_path / "nope.toml")

    def test_directory(self, tmp_path):
        with pytest.raises(ConfigError, match="is a directory"):
            load_config(tmp_path)

    def test_not_utf8(self, tmp_path):
        path = tmp_path / "c.toml"
        path.write_bytes(b"[daemon]\nhostname = '\xff'\n")
        with pytest.raises(ConfigError, match="not UTF-8"):
            load_config(path)

    def test_unreadable(self, tmp_path):
        path = tmp_path / "c.toml"
        path.write_text("")
        path.chmod(0)
        # root reads any file, so when the tests run as root a forked child drops to "nobody"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            os.close(read_end)
            message = "loaded"
            try:
                if os.geteuid() == 0:
                    os.setuid(65534)
                load_config(path)
            except ConfigError as exc:
                message = str(exc)
            finally:
                os.write(write_end, message.encode())
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
        assert message == f"{path}: permission denied"

    def test_default_path(self):
        assert default_config_path({}) == "/etc/fossamon/config.toml"
        assert default_config_path({"FOSSAMON_CONFIG": "/x.toml"}) == "/x.toml"

    def test_config_type(self):
        assert isinstance(parse_config("", env={}), Config)


class TestBadValuesFoundInReview:
    @pytest.mark.parametrize("level", ["nan", "inf", "-inf"])
    def test_non_finite_levels(self, level):
        (found,) = problems(f'[[rules]]\nname = "r"\nmetric = "m"\nwarning = {level}\n')
        assert found == f"test.toml: rules[0].warning: must be a finite number, got {level}"

    def test_absurd_duration(self):
        (found,) = problems('[collectors.system]\ninterval = "99999999999999999999999d"')
        assert found.startswith("test.toml: collectors.system.interval: must be at most 366d")

    def test_no_collector_enabled(self):
        assert problems("[collectors.system]\nenabled = false") == [
            "test.toml: collectors: no collector is enabled"
        ]

    def test_empty_paths_and_sql(self):
        found = problems(
            '[output.metrics]\npath = ""\n[collectors.db]\npath = " "\n'
            '[[collectors.db.queries]]\nname = "q"\nsql = "  "\n'
        )
        assert found == [
            "test.toml: output.metrics.path: must not be empty",
            "test.toml: collectors.db.path: must not be empty",
            "test.toml: collectors.db.queries[0].sql: must not be empty",
        ]

    def test_outputs_must_not_be_the_monitored_database(self, tmp_path):
        db = tmp_path / "app.db"
        found = problems(
            f'[output.metrics]\npath = "{db}"\n[output.alerts]\npath = "{db}-wal"\n'
            f'[collectors.db]\npath = "{db}"\n'
        )
        reason = "is the monitored database (or one of its files); fossamon never writes there"
        assert found == [
            f"test.toml: output.metrics.path: {db} {reason}",
            f"test.toml: output.alerts.path: {db}-wal {reason}",
        ]

    def test_metrics_and_alerts_must_differ(self):
        (found,) = problems(
            '[output.metrics]\npath = "/x/a.jsonl"\n[output.alerts]\npath = "/x/a.jsonl"'
        )
        assert (
            found
            == "test.toml: output.alerts.path: is the same file as output.metrics.path (/x/a.jsonl)"
        )

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            (
                '{ "X-A" = "v\\r\\nX-Injected: 1" }',
                "the value of header 'X-A' contains a line break",
            ),
            ('{ "Bad Name" = "v" }', "'Bad Name' is not a valid HTTP header name"),
        ],
    )
    def test_header_injection_is_refused(self, header, message):
        (found,) = problems(API + f"headers = {header}\n")
        assert found.startswith("test.toml: collectors.api.endpoints[0].headers: ")
        assert message in found

    @pytest.mark.parametrize(
        "url",
        ["http://127.0.0.1:99999/x", "http://[::1/x", "ftp://host/x", "http:///x", "http://a b/"],
    )
    def test_bad_urls_are_refused(self, url):
        text = f'[collectors.api]\n[[collectors.api.endpoints]]\nname = "a"\nurl = "{url}"\n'
        (found,) = problems(text)
        assert found.startswith("test.toml: collectors.api.endpoints[0].url: ")

    def test_deeply_nested_toml_is_an_error_not_a_crash(self):
        assert problems("a = " + "[" * 5000 + "]" * 5000) == [
            "test.toml: nested too deeply to be a config"
        ]

    def test_byte_order_mark_is_ignored(self):
        assert (
            parse_config('\ufeff[daemon]\nlog_level = "debug"\n', env={}).daemon.log_level
            == "debug"
        )

    def test_container_type_messages_name_toml_not_python(self):
        found = problems('[collectors]\napi = 3\n[collectors.system]\ndisks = "/"\n')
        assert found == [
            "test.toml: collectors.system.disks: expected a list ([ … ]), got '/'",
            "test.toml: collectors.api: expected a table ([section] or { key = value }), got 3",
        ]


def test_check_warns_about_two_rotators_on_one_file(tmp_path):
    from fossamon.config import parse_config
    from fossamon.overview import _rotation_warnings

    rules = tmp_path / "logrotate.d"
    rules.mkdir()
    (rules / "fossamon").write_text("/var/log/fossamon/performance-metrics.jsonl {\n daily\n}\n")
    config = parse_config("", env={})
    (found,) = _rotation_warnings(config, rules)
    assert found.startswith("output.metrics.rotation: ")
    assert "two rotators on one file lose data" in found
    external = parse_config(
        '[output.metrics]\npath = "/var/log/fossamon/performance-metrics.jsonl"\n'
        'rotation = "external"\n',
        env={},
    )
    assert _rotation_warnings(external, rules) == []
    never = parse_config(
        '[output.alerts]\npath = "/tmp/a.jsonl"\nmax_size = 0\nrotate_every = 0\n', env={}
    )
    assert any("never rotated" in w for w in _rotation_warnings(never, tmp_path / "none"))


class TestExporter:
    def test_default_is_loopback_9847_without_auth(self):
        exporter = parse_config("", env={}).exporter
        assert (exporter.listen, exporter.host, exporter.port) == (
            "127.0.0.1:9847",
            "127.0.0.1",
            9847,
        )
        assert exporter.loopback
        assert not exporter.has_auth

    @pytest.mark.parametrize(
        "listen", ["9847", ":9847", "host:", "127.0.0.1:0", "h:70000", "::1:9847", "[::1]x:9847"]
    )
    def test_a_bad_listen_names_the_key(self, listen):
        (found,) = problems(f'[exporter]\nlisten = "{listen}"')
        assert found.startswith("test.toml: exporter.listen: must be")

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('basic_auth_user = "u"', "go together"),
            (
                'bearer_token = "t0k3n-abc"\nbasic_auth_user = "u"\nbasic_auth_password = "p"',
                "not both",
            ),
            ('bearer_token = ""', "empty credential"),
        ],
    )
    def test_auth_combinations(self, text, message):
        (found,) = problems(f"[exporter]\n{text}")
        assert message in found

    @pytest.mark.parametrize("listen", ["0.0.0.0:9847", "[::]:9847", "192.0.2.7:9847", "h:1"])
    def test_a_wide_bind_without_auth_is_refused_naming_the_ways_out(self, listen):
        (found,) = problems(f'[exporter]\nlisten = "{listen}"')
        assert found.startswith(f'test.toml: exporter: listen = "{listen}" is reachable')
        for way_out in ("bearer_token", "bind 127.0.0.1", "allow_unauthenticated = true"):
            assert way_out in found
        allowed = f'[exporter]\nlisten = "{listen}"\nallow_unauthenticated = true'
        assert parse_config(allowed, env={}).exporter.allow_unauthenticated
        token = f'[exporter]\nlisten = "{listen}"\nbearer_token = "t0k3n-abcdef"'
        assert parse_config(token, env={}).exporter.has_auth
        basic = f'[exporter]\nlisten = "{listen}"\nbasic_auth_user = "u"\nbasic_auth_password = "p"'
        assert parse_config(basic, env={}).exporter.has_auth

    @pytest.mark.parametrize("listen", ["127.0.0.1:9847", "127.8.9.10:1", "[::1]:9847", ""])
    def test_loopback_or_off_needs_no_auth(self, listen):
        assert parse_config(f'[exporter]\nlisten = "{listen}"', env={}).exporter.listen == listen

    def test_check_warns_loudly_about_a_wide_bind_without_auth(self):
        from fossamon.overview import warnings

        wide = parse_config(
            '[exporter]\nlisten = "0.0.0.0:9847"\nallow_unauthenticated = true', env={}
        )
        (found,) = [w for w in warnings(wide) if w.startswith("exporter.listen")]
        assert "ANYONE" in found
        guarded = parse_config(
            '[exporter]\nlisten = "0.0.0.0:9847"\nbearer_token = "t0k3n-abcdef"', env={}
        )
        assert not [w for w in warnings(guarded) if w.startswith("exporter.listen")]
        ipv6 = parse_config('[exporter]\nlisten = "[::1]:9847"', env={})
        assert ipv6.exporter.loopback


class TestValuesAndSerialisation:
    def test_configs_compare_by_value_and_sections_without_lists_hash(self):
        text = API + '[[rules]]\nname = "r"\nmetric = "m"\nwarning = 1\n'
        assert parse_config(text, env={}) == parse_config(text, env={})
        assert parse_config(text, env={}) != parse_config(text.replace("= 1", "= 2"), env={})
        daemon = parse_config("", env={}).daemon
        assert hash(daemon) == hash(parse_config("", env={}).daemon)

    def test_each_config_has_default_sections_of_its_own(self):
        first, second = parse_config("", env={}), parse_config("", env={})
        assert first.output.metrics is not second.output.metrics
        assert first.collectors.system.disks is not second.collectors.system.disks
        first.collectors.system.disks.append("/elsewhere")  # a slip anywhere must not leak
        assert parse_config("", env={}).collectors.system.disks == ["/"]

    def test_an_integer_too_big_for_a_float_is_a_problem_not_a_crash(self):
        huge = "1" + "0" * 400
        found = problems(f'[[rules]]\nname = "r"\nmetric = "m"\nwarning = {huge}\n')
        assert found == [f"test.toml: rules[0].warning: must be a finite number, got {huge}"]
        found = problems(
            API.replace("[collectors.api]", f"[collectors.api]\nmax_concurrency = {huge}")
        )
        expected = "input should be less than or equal to 10000, got"
        assert found == [f"test.toml: collectors.api.max_concurrency: {expected} {huge[:57]}..."]

    def test_a_float_field_refuses_an_integer_beyond_floats(self):
        from fossamon.tools.loadtest_scenario import parse_scenario

        huge = int("1" + "0" * 400)
        endpoint = {"name": "a", "url": "http://127.0.0.1:1/", "weight": huge}
        with pytest.raises(
            ConfigError, match=r"endpoints\[0\]\.weight: input should be a valid number"
        ):
            parse_scenario({"endpoints": [endpoint]})

    def test_a_rules_json_is_the_bytes_pydantic_wrote(self):
        # The evaluator saves sha256(to_json()) with each alert state; had these bytes changed
        # with the move off pydantic, the first start after the upgrade would have resolved
        # every open alert as "rule removed or changed".
        config = parse_config(
            '[[rules]]\nname = "disk_fill"\nmetric = "system_disk_bytes"\n'
            'labels = { mount = "/données" }\naggregate = "predict"\nwindow = "6h"\n'
            'predict_ahead = "1d"\nwarning = "900TB"\ncritical = 1e20\nfor = "30m"\n'
            "summary = 'disk \"{mount}\" fills'\n",
            env={},
        )
        assert config.rules[0].to_json() == (
            '{"name":"disk_fill","metric":"system_disk_bytes","labels":{"mount":"/données"},'
            '"aggregate":"predict","window":21600.0,"predict_ahead":86400.0,"direction":"above",'
            '"warning":900000000000000.0,"critical":1e+20,"clear":null,"clear_warning":null,'
            '"clear_critical":null,"for_":1800.0,"keep_firing_for":0.0,"repeat_every":0.0,'
            '"repeat_every_warning":null,"repeat_every_critical":null,"no_data":"alert",'
            '"no_data_after":null,"flap_threshold":6,"flap_window":600.0,'
            '"summary":"disk \\"{mount}\\" fills"}'
        )

    def test_the_shipped_rules_keep_their_fingerprints(self):
        # sha256(model_dump_json())[:16] of each shipped rule, as pydantic computed them
        import hashlib

        config = load_config(REPO / "config.toml", env={})
        digests = {
            r.name: hashlib.sha256(r.to_json().encode()).hexdigest()[:16] for r in config.rules
        }
        assert digests == {
            "api_p95_latency": "1c0eb7910fadf28c",
            "api_down": "5ae747f90da72c8b",
            "db_query_slow": "5ff82d6b52c620d9",
            "db_down": "2e764a6da38d018a",
            "cpu_high": "57b21845cc773ca8",
            "memory_high": "271b918ae9e72efe",
            "disk_full": "86047ac69352f42a",
            "disk_full_within_a_day": "e43c19a5ebd6eac5",
        }

    def test_to_dict_names_fields_as_the_code_does(self):
        config = parse_config(API + 'json = { token = "t" }\n', env={})
        assert config.collectors.api is not None
        endpoint = config.to_dict()["collectors"]["api"]["endpoints"][0]
        assert endpoint["json_body"] == {"token": "t"}
        assert "json" not in endpoint


class TestSections:
    def test_a_section_is_checked_as_the_loader_checks_it(self):
        rule = validate_section(RuleConfig, {"name": "r", "metric": "m", "for": "1m", "warning": 1})
        assert rule.for_ == 60.0
        with pytest.raises(ConfigError) as caught:
            validate_section(RuleConfig, {"name": "r", "metric": "m", "window": 5}, "t.toml")
        (found,) = [str(p) for p in caught.value.problems]
        assert found == (
            't.toml: window: expected a duration such as "250ms", "15s", "5m", "1h" or "1d" '
            '(with a unit: write "5s"), got 5'
        )

    def test_a_sink_that_is_not_a_table_says_so(self):
        assert problems("sinks = [3]") == [
            "test.toml: sinks[0]: expected a table ([section] or { key = value }), got 3"
        ]

    def test_a_name_pattern_is_shown_as_written(self):
        (found,) = problems('[[rules]]\nname = "r x"\nmetric = "m"\nwarning = 1\n')
        assert "(string should match pattern '^[A-Za-z_][A-Za-z0-9_.:-]*$')" in found

    def test_a_trailing_newline_is_no_part_of_a_name(self):
        (found,) = problems('[[rules]]\nname = "r\\n"\nmetric = "m"\nwarning = 1\n')
        assert found.startswith("test.toml: rules[0].name: has characters that are not allowed")


def test_the_daemon_never_imports_pydantic():
    # pydantic and pydantic_core cost the daemon ~20 MB of its 50 MB budget (issue 8)
    code = (
        "import sys\n"
        "import fossamon.daemon, fossamon.web.server, fossamon.oneshot\n"
        "from fossamon.config import load_config\n"
        f"load_config({str(REPO / 'config.toml')!r}, env={{}})\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0].startswith('pydantic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
