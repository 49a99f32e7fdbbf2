"""Settings from flags, `GATEWAY_*` variables and a TOML file, in that order; every mistake is one
line naming where the value came from; `gateway config`'s report masks secrets.

The command itself (`gateway config`, errors at start-up) is tested in test_cli.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gateway.cli import SETTINGS_CHECKS
from gateway.config import (
    DEFAULT,
    ENVIRONMENT,
    FILE,
    FLAG,
    Check,
    Settings,
    configure,
    find_config_file,
    load_settings,
    mask,
    settings_from_table,
)
from gateway.errors import ConfigError


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return tmp_path / "gateway.toml"


def _error(
    toml: Path,
    text: str,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    checks: Sequence[Check] = (),
) -> str:
    toml.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        configure(flags, environ, file=toml, checks=checks)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults(
    toml: Path,
) -> None:
    toml.write_text(
        'port = 8001\nhost = "0.0.0.0"\ncache_ttl = 30\nlog_level = "debug"\nfederation = true\n'
    )
    configuration = configure(
        {"port": 9100, "host": None, "introspection": False},
        {"GATEWAY_PORT": "9000", "GATEWAY_HOST": "::1", "GATEWAY_INTROSPECTION": "true"},
        toml,
    )
    assert configuration.settings == Settings(
        host="::1",
        port=9100,
        cache_ttl=30.0,
        log_level="debug",
        introspection=False,
        federation=True,
    )
    assert type(configuration.settings.cache_ttl) is float  # an integer is a number
    origins = configuration.origins
    assert (origins["port"], origins["introspection"], origins["host"]) == (FLAG, FLAG, ENVIRONMENT)
    assert (origins["cache_ttl"], origins["log_level"], origins["federation"]) == (FILE, FILE, FILE)
    assert origins["max_depth"] == DEFAULT
    assert [configuration.source(name) for name in ("port", "host", "cache_ttl", "max_depth")] == [
        "--port",
        "GATEWAY_HOST",
        str(toml),
        "default",
    ]


def test_every_setting_can_come_from_the_file(toml: Path) -> None:
    """The TOML keys are the field names, each with a value of its own type."""
    chosen = Settings(
        host="0.0.0.0",
        port=9999,
        upstream="https://example.org/api/v4/",
        upstream_timeout=2.5,
        max_depth=7,
        introspection=False,
        cors_origins="https://a.example",
        workers=3,
        cache="redis://127.0.0.1:6379/2",
        federation=True,
    )
    lines = []
    for field in dataclasses.fields(Settings):
        value = getattr(chosen, field.name)
        if isinstance(value, bool):
            lines.append(f"{field.name} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{field.name} = "{value}"')
        elif value is not None:
            lines.append(f"{field.name} = {value}")
    toml.write_text("\n".join(lines))
    configuration = configure(file=toml)
    assert configuration.settings == chosen
    assert {name for name, origin in configuration.origins.items() if origin == DEFAULT} == {
        "database"
    }  # TOML has no null: an unset setting is left out


def test_without_a_file_nothing_is_read() -> None:
    assert configure().settings == Settings() == load_settings()
    assert configure().file is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('cache_ttl = "x"', 'cache_ttl: expected a number, got "x"'),
        ('port = "8000"', 'port: expected an integer, got "8000"'),
        ("port = 8000.5", "port: expected an integer, got 8000.5"),
        ("port = true", "port: expected an integer, got true"),
        ("cache_ttl = false", "cache_ttl: expected a number, got false"),
        ('introspection = "yes"', 'introspection: expected true or false, got "yes"'),
        ("introspection = 1", "introspection: expected true or false, got 1"),
        ("upstream = 5", "upstream: expected a string, got 5"),
        ('host = ["a", "b"]', "host: expected a string, got an array"),
        ("[database]\nurl = 'x'", "database: expected a string, got a table"),
    ],
)
def test_a_value_of_the_wrong_type_in_the_file_is_one_line(
    toml: Path, text: str, expected: str
) -> None:
    assert _error(toml, text) == f"{toml}: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cache-ttl = 5", 'unknown setting "cache-ttl" (did you mean cache_ttl?)'),
        ("max_dept = 5", 'unknown setting "max_dept" (did you mean max_depth?)'),
        ("frobnicate = 1", 'unknown setting "frobnicate"'),
        ("[gateway]\nport = 1", 'unknown setting "gateway"'),
    ],
)
def test_an_unknown_key_is_one_line(toml: Path, text: str, expected: str) -> None:
    assert _error(toml, text) == f"{toml}: {expected}"


def test_the_whole_file_is_checked_even_where_a_flag_hides_a_key(toml: Path) -> None:
    message = _error(toml, 'port = "x"', flags={"port": 8001})
    assert message.startswith(f"{toml}: port: ")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"port = ", "not valid TOML"),
        (b"port = 1\nport = 2\n", "not valid TOML"),
        (b'host = "\xff"', "not valid TOML"),
    ],
    ids=["syntax", "duplicate", "not-utf8"],
)
def test_a_file_that_is_not_toml_is_one_line(toml: Path, content: bytes, needle: str) -> None:
    toml.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(f"{toml}: {needle}")) as raised:
        configure(file=toml)
    assert "\n" not in str(raised.value)


def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    for path, reason in [
        (tmp_path / "missing.toml", "No such file or directory"),
        (tmp_path, "Is a directory"),
    ]:
        with pytest.raises(ConfigError) as raised:
            configure(file=path)
        assert str(raised.value) == f"{path}: cannot be read: {reason}"


@pytest.mark.parametrize(
    ("flags", "environ", "text", "prefix"),
    [
        ({}, {}, "port = 70000", "{toml}: port: port must be between 1 and 65535"),
        ({}, {"GATEWAY_PORT": "70000"}, "", "GATEWAY_PORT: port must be between"),
        ({"port": 70000}, {}, "", "--port: port must be between"),
        ({}, {}, "workers = 0", "{toml}: workers: workers must be at least 1, got 0"),
        ({"workers": -1}, {}, "", "--workers: workers must be at least 1, got -1"),
        ({}, {}, "cache_ttl = nan", "{toml}: cache_ttl: cache ttl must be finite and positive"),
        ({}, {}, 'log_level = "loud"', "{toml}: log_level: log level must be one of"),
        (
            {},
            {"GATEWAY_DATABASE": "sqlite:///x.db"},
            'upstream = "https://example.org/api/v4/"',
            "GATEWAY_DATABASE and {toml}: upstream: give a database or an upstream, not both",
        ),
    ],
)
def test_a_value_the_gateway_cannot_run_with_names_its_source(
    toml: Path, flags: dict[str, object], environ: dict[str, str], text: str, prefix: str
) -> None:
    message = _error(toml, text, flags=flags, environ=environ)
    assert message.startswith(prefix.format(toml=toml)), message


def test_errors_never_show_a_password(toml: Path) -> None:
    for text, environ in [
        ("", {"GATEWAY_DATABASE": "mysql://app:hunter2@db.example/dp"}),
        ('upstream = "ftp://app:hunter2@example.org/"', {}),
        ('database = "mysql://app:hunter2@db.example/dp"', {}),
    ]:
        message = _error(toml, text, environ=environ, checks=SETTINGS_CHECKS)
        assert "hunter2" not in message
        assert "app:***@" in message


# Finding the file: `--config`, else `GATEWAY_CONFIG`, else ./gateway.toml when there is one.


def test_the_file_is_the_flag_else_the_variable_else_gateway_toml_in_the_directory(
    tmp_path: Path,
) -> None:
    assert find_config_file(None, {}, cwd=tmp_path) is None
    (tmp_path / "gateway.toml").write_text("")
    assert find_config_file(None, {}, cwd=tmp_path) == tmp_path / "gateway.toml"
    environ = {"GATEWAY_CONFIG": "/etc/gateway/env.toml"}
    assert find_config_file(None, environ, cwd=tmp_path) == Path("/etc/gateway/env.toml")
    assert find_config_file("flag.toml", environ, cwd=tmp_path) == Path("flag.toml")
    # Named, the file must exist: it is read (and fails) even if ./gateway.toml would do.
    assert find_config_file("missing.toml", {}, cwd=tmp_path) == Path("missing.toml")


def test_a_directory_named_gateway_toml_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").mkdir()
    assert find_config_file(None, {}, cwd=tmp_path) is None


@pytest.mark.parametrize(("flag", "environ"), [("", {}), (None, {"GATEWAY_CONFIG": " "})])
def test_an_empty_file_name_is_an_error(flag: str | None, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="expected a file name"):
        find_config_file(flag, environ)


# Secrets: masked wherever a value is shown.


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user:s%40cr:et@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        # SQLAlchemy reads a password up to the first `@`, `/`, `?` and `#` included.
        ("postgresql://gw:pa/ss@db.internal/dp", "postgresql://gw:***@db.internal/dp"),
        ("postgresql://gw:p#w?x@h/db", "postgresql://gw:***@h/db"),
        (
            "postgresql:///db?host=/run/pg&password=secret&sslmode=require",
            "postgresql:///db?host=/run/pg&password=***&sslmode=require",
        ),
        ("https://example.org/api/v4/?token=secret", "https://example.org/api/v4/?token=***"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////var/lib/catalogue.sqlite3", "sqlite:////var/lib/catalogue.sqlite3"),
        ("https://a.example,https://b.example", "https://a.example,https://b.example"),
        ("not a url: secret", "not a url: secret"),
        ("", ""),
    ],
)
def test_mask(url: str, shown: str) -> None:
    assert mask(url) == shown


def test_the_report_shows_every_setting_its_value_and_source_with_secrets_masked(
    toml: Path,
) -> None:
    toml.write_text('database = "postgresql://app:hunter2@db.example:5432/dp"\nmax_depth = 4\n')
    report = configure({"port": 9100}, {"GATEWAY_FEDERATION": "yes"}, toml).report()
    assert "hunter2" not in report
    lines = report.splitlines()
    assert lines[0] == f"# configuration file: {toml}"
    rows = {re.split(r"[ :]", line.lstrip("# "))[0]: line for line in lines[1:]}
    assert list(rows) == [field.name for field in dataclasses.fields(Settings)]
    assert re.fullmatch(
        r'database = "postgresql://app:\*\*\*@db\.example:5432/dp" +# ' + re.escape(str(toml)),
        rows["database"],
    )
    assert re.fullmatch(r"port = 9100 +# --port", rows["port"])
    assert re.fullmatch(r"federation = true +# GATEWAY_FEDERATION", rows["federation"])
    assert re.fullmatch(r"max_depth = 4 +# " + re.escape(str(toml)), rows["max_depth"])
    assert re.fullmatch(r'host = "127\.0\.0\.1" +# default', rows["host"])
    assert re.fullmatch(r"# upstream: not set +# default", rows["upstream"])


# The settings a worker process is handed: typed values, validated again.


def test_settings_round_trip_through_a_table() -> None:
    settings = Settings(database="sqlite:///x.db", port=9001, cache_ttl=1.5, workers=4)
    assert settings_from_table(dataclasses.asdict(settings), "handed") == settings


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"port": "9001"}, 'handed: port: expected an integer, got "9001"'),
        ({"nope": 1}, 'handed: unknown setting "nope"'),
        ({"port": 0}, "handed: port: port must be between 1 and 65535, got 0"),
    ],
)
def test_a_wrong_table_is_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_table(table, "handed")
    assert str(raised.value) == message
