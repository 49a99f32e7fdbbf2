"""The `gateway` command as a person runs it, and the settings it reads.

Each command runs as a real subprocess with `GATEWAY_*` variables under the test's control, so
that what is checked is what a terminal shows: standard output, standard error and exit status.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError
from tests.fake_upstream import FakeUpstream
from tests.waiting import LISTENING, Output

ROOT = Path(__file__).resolve().parent.parent

# Nothing listens on port 1: an upstream there fails fast if it is ever used.
NOWHERE = "http://127.0.0.1:1/api/v4/"


def _env(**gateway: str) -> dict[str, str]:
    """This process's environment without any `GATEWAY_*` variable, plus the ones given."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    return {**env, **gateway}


def _gateway(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    launcher: tuple[str, ...] = ("-m", "gateway"),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *launcher, *args],
        capture_output=True,
        encoding="utf-8",
        env=_env() if env is None else env,
        cwd=cwd,
        timeout=30,
        check=False,
    )


def _output(run: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a `query` printed."""
    return json.loads(run.stdout)


def _assert_one_line_error(run: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("gateway: error: ")
    for needle in needles:
        assert needle in line


def test_export_schema_prints_schema_graphql() -> None:
    run = _gateway("export-schema")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (ROOT / "schema.graphql").read_text(encoding="utf-8")


def test_query_prints_the_result(upstream: FakeUpstream) -> None:
    run = _gateway("query", "{ categories { totalCount } }", "--upstream", upstream.base_url)
    assert run.returncode == 0, run.stderr
    assert _output(run) == {
        "data": {"categories": {"totalCount": len(upstream.dataset.categories)}}
    }
    assert upstream.count > 0


# `gateway` as `python -m gateway` runs it, printing each process it starts (Python's audit event).
_AUDITED = """
import sys

def audit(event, args):
    if event == "subprocess.Popen":
        print("started:", *args[1], file=sys.stderr)

sys.addaudithook(audit)
from gateway.cli import main

main()
"""


def test_query_starts_no_documents_process(upstream: FakeUpstream) -> None:
    """One operation has no event loop to keep free: its document is read on a thread, not by
    the child Python `gateway serve` starts for that (gateway/documents/offload.py)."""
    query = "{ categories { totalCount } }"
    run = _gateway("query", query, "--upstream", upstream.base_url, launcher=("-c", _AUDITED))
    assert run.returncode == 0, run.stderr
    assert "data" in _output(run)
    assert "gateway.documents.offload" not in run.stderr


def test_query_with_variables_and_an_operation_name(upstream: FakeUpstream) -> None:
    # A grid with Japanese and Cyrillic text, so that the printed JSON must be UTF-8.
    [grid] = [row for row in upstream.dataset.grids if "国際化" in row.description]
    document = """
        query Count { categories { totalCount } }
        query Grid($id: Int!) { grid(id: $id) { title description } }
    """
    run = _gateway(
        "query",
        document,
        "--variables",
        json.dumps({"id": grid.id}),
        "--operation-name",
        "Grid",
        "--upstream",
        upstream.base_url,
    )
    assert run.returncode == 0, run.stderr
    assert _output(run) == {
        "data": {"grid": {"title": grid.title, "description": grid.description}}
    }


@pytest.mark.parametrize(
    ("variables", "needle"), [("{bad", "not valid JSON"), ("[1]", "must be a JSON object")]
)
def test_query_with_bad_variables_is_a_one_line_error(
    upstream: FakeUpstream, variables: str, needle: str
) -> None:
    run = _gateway(
        "query",
        "query($id: Int!) { grid(id: $id) { title } }",
        "--variables",
        variables,
        "--upstream",
        upstream.base_url,
    )
    _assert_one_line_error(run, "--variables", needle)
    assert upstream.count == 0


def test_query_with_an_invalid_document_prints_errors_and_exits_1(upstream: FakeUpstream) -> None:
    run = _gateway("query", "{ nope }", "--upstream", upstream.base_url)
    assert run.returncode == 1
    body = _output(run)
    assert "data" not in body
    assert [error["extensions"]["code"] for error in body["errors"]] == [
        "GRAPHQL_VALIDATION_FAILED"
    ]


@pytest.mark.parametrize(
    ("document", "operation_name", "needle"),
    [
        ("{ categories { totalCount } }", "B", "no operation named 'B'"),
        ("{ categories { totalCount } }", "<script>" * 5_000, "no operation named '<script>"),
        ("fragment F on Query { categories { totalCount } }", None, "pass --operation-name"),
        (
            "query A { categories { totalCount } } query B { grids { totalCount } }",
            None,
            "several operations",
        ),
        ("", None, "the query is empty"),
    ],
)
def test_query_without_an_operation_to_run_is_a_one_line_error(
    upstream: FakeUpstream, document: str, operation_name: str | None, needle: str
) -> None:
    extra = ["--operation-name", operation_name] if operation_name is not None else []
    run = _gateway("query", document, *extra, "--upstream", upstream.base_url)
    _assert_one_line_error(run, needle)
    assert len(run.stderr) < 300


def test_query_over_a_failing_upstream_prints_errors_and_exits_1(upstream: FakeUpstream) -> None:
    upstream.faults["/api/v4/grids/"] = "503"
    run = _gateway("query", "{ grids { totalCount } }", "--upstream", upstream.base_url)
    assert run.returncode == 1
    [error] = _output(run)["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_ERROR"
    assert "Traceback" not in run.stderr


def test_query_uses_gateway_upstream_from_the_environment(upstream: FakeUpstream) -> None:
    run = _gateway(
        "query", "{ categories { totalCount } }", env=_env(GATEWAY_UPSTREAM=upstream.base_url)
    )
    assert run.returncode == 0, run.stderr
    assert _output(run) == {
        "data": {"categories": {"totalCount": len(upstream.dataset.categories)}}
    }
    assert upstream.count > 0


def test_the_upstream_flag_beats_the_environment(upstream: FakeUpstream) -> None:
    """The environment's value would fail validation: it is not even read."""
    run = _gateway(
        "query",
        "{ categories { totalCount } }",
        "--upstream",
        upstream.base_url,
        env=_env(GATEWAY_UPSTREAM="ftp://not-even-http"),
    )
    assert run.returncode == 0, run.stderr
    assert _output(run) == {
        "data": {"categories": {"totalCount": len(upstream.dataset.categories)}}
    }


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["frobnicate"], {}, ["frobnicate"]),
        ([], {}, ["command"]),
        (["serve", "--port", "notanumber"], {}, ["--port", "notanumber"]),
        (["serve", "--port", "70000"], {}, ["70000"]),
        (["serve", "--upstream", "ftp://x"], {}, ["ftp://x"]),
        (["serve"], {"GATEWAY_PORT": "eighty"}, ["GATEWAY_PORT", "eighty"]),
        (["query", "{ __typename }"], {"GATEWAY_UPSTREAM_TIMEOUT": "nan"}, ["timeout"]),
    ],
    ids=["unknown", "none", "port-type", "port-range", "scheme", "env-port", "env-nan"],
)
def test_wrong_options_are_one_line_errors(
    args: list[str], env: dict[str, str], needles: list[str]
) -> None:
    # A valid upstream that is never reached: every case must stop before serving or querying.
    _assert_one_line_error(_gateway(*args, env=_env(GATEWAY_UPSTREAM=NOWHERE, **env)), *needles)


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("postgresql://u:hunter2@127.0.0.1:notaport/db", ["not a database URL", "u:***@"]),
        ("postgresql://[::1:5432/db", ["not a database URL"]),
        ("postgresql://u@127.0.0.1:5432/db?sslmode=bogus", ["sslmode 'bogus'", "verify-full"]),
        ("postgresql://u@127.0.0.1:99999/db", ["port 99999"]),
        ("postgresql://u@127.0.0.1:0/db", ["port 0"]),
        ("postgresql:///db?host=127.0.0.1:5432&host=10.0.0.1:70000", ["port 70000"]),
        ("postgresql:///db?port=abc", ["non-integer port"]),
        (
            "postgresql://u@127.0.0.1/db?connect_timeout=abc",
            ["unknown parameter 'connect_timeout'"],
        ),
        ("postgresql://u@127.0.0.1/db?user=a&user=b", ["'user' is given more than once"]),
        ("postgresql://u@127.0.0.1/db?ssl=prefer&sslmode=disable", ["both sslmode and ssl"]),
        ("postgres://u:hunter2@127.0.0.1/db?password=hunter2&x=1", ["unknown parameter 'x'"]),
        ("mysql://u@127.0.0.1/db", ["sqlite:// or postgresql://"]),
        ("sqlite://host/catalogue.sqlite3", ["Invalid SQLite URL"]),
        ("sqlite:///catalogue.sqlite3?timeout=abc", ["could not convert string to float"]),
        ("sqlite:///catalogue.sqlite3?mode=ro", ["'mode' are not accepted"]),
        ("sqlite:///no/such/directory/catalogue.sqlite3", ["database file not found"]),
    ],
)
def test_a_database_url_it_cannot_use_stops_serve_in_one_line(url: str, needles: list[str]) -> None:
    """Found when the URL is read, not as a traceback at the first connection (a port that is
    not a number, a parameter asyncpg does not take, a value it cannot use)."""
    run = _gateway("serve", "--port", str(_free_port()), "--database", url)
    _assert_one_line_error(run, *needles)
    assert "hunter2" not in run.stderr


def test_an_embedded_catalogue_it_cannot_make_stops_serve_in_one_line(tmp_path: Path) -> None:
    """Without a backend flag the catalogue is made in the data directory: where that cannot
    be (a file in the way, above it or in its place), start-up stops with one line."""
    above = tmp_path / "file"
    above.write_text("")
    run = _gateway("serve", "--port", str(_free_port()), env=_env(XDG_DATA_HOME=str(above)))
    _assert_one_line_error(run, "the embedded catalogue cannot be made", "Not a directory")

    (tmp_path / "djangopackages-gateway").write_text("")
    run = _gateway("serve", "--port", str(_free_port()), env=_env(XDG_DATA_HOME=str(tmp_path)))
    _assert_one_line_error(run, "the embedded catalogue cannot be made", "File exists")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_until_terminated(upstream: FakeUpstream) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream.base_url, "--log-level", "info"]
    process = subprocess.Popen(
        command, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = Output(process.stderr)
    try:
        origin = f"http://127.0.0.1:{port}"
        log.wait_for(LISTENING)
        assert httpx.get(f"{origin}/healthz", timeout=5).status_code == 200
        response = httpx.post(
            f"{origin}/graphql", json={"query": "{ categories { totalCount } }"}, timeout=10
        )
        assert response.json() == {
            "data": {"categories": {"totalCount": len(upstream.dataset.categories)}}
        }
        assert upstream.count > 0
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
    stderr = log.text
    # uvicorn shuts down gracefully (the lifespan closes the backend), then re-raises the signal.
    assert "Application shutdown complete" in stderr
    assert process.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr


# load_settings: flags beat the environment, which beats the defaults.


def test_defaults() -> None:
    """With nothing given, the dataclass defaults hold; which backend that means is not ours."""
    assert load_settings() == Settings()
    settings = load_settings({}, {})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.upstream_timeout, settings.log_level) == (10.0, "info")


def test_the_environment_beats_the_defaults_and_is_converted() -> None:
    settings = load_settings(
        {},
        {
            "GATEWAY_HOST": "0.0.0.0",
            "GATEWAY_PORT": "9000",
            "GATEWAY_UPSTREAM": "http://mirror.example/api/v4/",
            "GATEWAY_UPSTREAM_TIMEOUT": "2.5",
            "GATEWAY_LOG_LEVEL": "debug",
            "PORT": "1",  # not ours
            "GATEWAY_PORTS": "2",  # not ours either
        },
    )
    assert settings == Settings(
        host="0.0.0.0",
        port=9000,
        upstream="http://mirror.example/api/v4/",
        upstream_timeout=2.5,
        log_level="debug",
    )
    assert type(settings.port) is int
    assert type(settings.upstream_timeout) is float


def test_flags_beat_the_environment_field_by_field() -> None:
    settings = load_settings(
        {"port": 9100, "upstream": None, "upstream_timeout": 3, "log_level": None},
        {"GATEWAY_PORT": "9000", "GATEWAY_UPSTREAM": "https://env.example/", "GATEWAY_HOST": "::1"},
    )
    assert settings == Settings(
        host="::1", port=9100, upstream="https://env.example/", upstream_timeout=3.0
    )
    assert type(settings.upstream_timeout) is float


def test_a_flag_hides_a_bad_environment_value() -> None:
    """The environment is not even read for a setting the command line gives."""
    settings = load_settings({"port": 8001}, {"GATEWAY_PORT": "eighty"})
    assert settings.port == 8001


@pytest.mark.parametrize(
    ("flags", "environ", "name"),
    [
        ({}, {"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ({}, {"GATEWAY_PORT": ""}, "GATEWAY_PORT"),
        ({}, {"GATEWAY_PORT": "8000.5"}, "GATEWAY_PORT"),
        ({}, {"GATEWAY_UPSTREAM_TIMEOUT": "soon"}, "GATEWAY_UPSTREAM_TIMEOUT"),
        ({"port": "eighty"}, {}, "--port"),
        ({"upstream_timeout": "soon"}, {}, "--upstream-timeout"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_source(
    flags: dict[str, object], environ: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(flags, environ)


@pytest.mark.parametrize(
    "flags",
    [
        {"port": 0},
        {"port": 65536},
        {"upstream": "ftp://djangopackages.org/api/v4/"},
        {"upstream": "djangopackages.org/api/v4/"},
        {"upstream": "http:///api/v4/"},
        {"upstream_timeout": 0},
        {"upstream_timeout": -1},
        {"upstream_timeout": math.nan},
        {"upstream_timeout": math.inf},
        {"log_level": "loud"},
        {"max_connections": 0},
        {"max_header_bytes": -1},
        {"idle_timeout": 0},
        {"idle_timeout": math.inf},
        {"cache_stale": -1},
        {"cache_stale": math.inf},
        {"upstream_retries": -1},
    ],
)
def test_a_value_the_gateway_cannot_run_with_is_refused(flags: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(flags, {})


@pytest.mark.parametrize(
    "flags",
    [
        {"port": 1},
        {"port": 65535},
        {"upstream": "https://djangopackages.org/api/v4/"},
        {"upstream_timeout": 0.001},
    ],
)
def test_values_at_the_edges_are_accepted(flags: dict[str, object]) -> None:
    settings = load_settings(flags, {})
    [(name, value)] = flags.items()
    assert getattr(settings, name) == value


# The TOML file, `gateway config`, and mistakes in either, as a terminal shows them.


def _rows(report: str) -> dict[str, tuple[str, str]]:
    """`gateway config`'s lines by setting: (what is shown, its source)."""
    rows = {}
    for line in report.splitlines()[1:]:
        shown, _, source = line.rpartition(" # ")
        name = shown.lstrip("# ").split(" ")[0].rstrip(":")
        rows[name] = (shown.strip(), source)
    return rows


def test_config_prints_each_setting_its_value_and_source(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        'database = "postgresql://app:hunter2@db.example/dp"\nmax_depth = 4\nport = 8001\n'
    )
    run = _gateway(
        "config",
        "--port",
        "9100",
        env=_env(GATEWAY_MAX_COST="99", GATEWAY_PORT="9000"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "hunter2" not in run.stdout
    assert run.stdout.splitlines()[0] == "# configuration file: gateway.toml"
    rows = _rows(run.stdout)
    assert len(rows) == len(dataclasses.fields(Settings))
    assert rows["database"] == ('database = "postgresql://app:***@db.example/dp"', "gateway.toml")
    assert rows["max_depth"] == ("max_depth = 4", "gateway.toml")
    assert rows["max_cost"] == ("max_cost = 99", "GATEWAY_MAX_COST")
    assert rows["port"] == ("port = 9100", "--port")
    assert rows["upstream"] == ("# upstream: not set", "default")
    assert rows["federation"] == ("federation = false", "default")


def test_the_config_flag_beats_the_variable_which_beats_gateway_toml(tmp_path: Path) -> None:
    for name, number in [("gateway.toml", 8001), ("env.toml", 8002), ("flag.toml", 8003)]:
        (tmp_path / name).write_text(f"port = {number}\n")
    cases = [
        ([], {}, "gateway.toml", "8001"),
        ([], {"GATEWAY_CONFIG": "env.toml"}, "env.toml", "8002"),
        (["--config", "flag.toml"], {"GATEWAY_CONFIG": "env.toml"}, "flag.toml", "8003"),
    ]
    for args, env, file, port in cases:
        run = _gateway("config", *args, env=_env(**env), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0] == f"# configuration file: {file}"
        assert _rows(run.stdout)["port"] == (f"port = {port}", file)


def test_query_and_export_schema_read_the_file_too(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "gateway.toml").write_text(f'upstream = "{upstream.base_url}"\nfederation = true\n')
    run = _gateway("query", "{ _service { sdl } categories { totalCount } }", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = _output(run)["data"]
    assert data["categories"] == {"totalCount": len(upstream.dataset.categories)}
    assert '@key(fields: "id")' in data["_service"]["sdl"]
    exported = _gateway("export-schema", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == data["_service"]["sdl"] + "\n"


@pytest.mark.parametrize(
    ("command", "toml", "env", "needles"),
    [
        (["serve"], 'cache_ttl = "x"', {}, ['gateway.toml: cache_ttl: expected a number, got "x"']),
        (
            ["serve"],
            "cache-ttl = 1",
            {},
            ['gateway.toml: unknown setting "cache-ttl"', "cache_ttl?"],
        ),
        (["serve"], "port = ", {}, ["gateway.toml: not valid TOML"]),
        (["serve"], "port = 70000", {}, ["gateway.toml: port: ", "70000"]),
        (["serve"], "", {"GATEWAY_CONFIG": "missing.toml"}, ["missing.toml: cannot be read"]),
        (["serve", "--config", "."], "", {}, [".: cannot be read: Is a directory"]),
        (["serve", "--workers", "0"], "", {}, ["--workers: workers must be at least 1, got 0"]),
        (["serve"], "workers = -2", {}, ["gateway.toml: workers: ", "at least 1, got -2"]),
        (
            ["serve"],
            "",
            {"GATEWAY_WORKERS": "two"},
            ['GATEWAY_WORKERS: expected an integer, got "two"'],
        ),
        (["config"], "federation = 1", {}, ["gateway.toml: federation: expected true or false"]),
        (["query", "{ __typename }"], "max_depth = 0", {}, ["gateway.toml: max_depth: "]),
        (["export-schema"], 'federation = "yes"', {}, ["gateway.toml: federation: "]),
    ],
)
def test_a_wrong_file_or_value_is_a_one_line_error(
    tmp_path: Path, command: list[str], toml: str, env: dict[str, str], needles: list[str]
) -> None:
    if toml:
        (tmp_path / "gateway.toml").write_text(toml)
    run = _gateway(*command, env=_env(GATEWAY_UPSTREAM=NOWHERE, **env), cwd=tmp_path)
    _assert_one_line_error(run, *needles)
