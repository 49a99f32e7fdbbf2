"""Settings: defaults, overridden by a TOML file, by `GATEWAY_*` environment variables, by flags.

With neither a database nor an upstream the gateway serves its embedded catalogue. Each
setting is declared once here, with its help text and whether its value changes what a query
answers; the command line's flags, the environment variables, the TOML file's keys (the field
names), `gateway config`'s report and the response cache's namespace are all made from these
declarations. Every value is validated when the settings are made, so that a wrong setting stops
the gateway at start-up with one clear line naming where the value came from, instead of failing
a request later: here, and by the further checks the caller hands in (`Check`) for what only
other layers know (a database URL the database driver reads, OpenTelemetry installed).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigError, SettingError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")

# Which commands have a setting's flag: `gateway serve` and `gateway config` have them all.
SERVER = "server"  # serving only; unscoped settings are flags of `gateway query` too
SCHEMA = "schema"  # changes the schema itself: a flag of `query` and `export-schema` too

# The TOML file: `--config PATH`, else `GATEWAY_CONFIG`, else this file if the directory has it.
CONFIG_FILE = "gateway.toml"
CONFIG_VARIABLE = "GATEWAY_CONFIG"


def _setting(default: Any, help: str, scope: str = "", *, changes_answer: bool = False) -> Any:
    """A setting's declaration. `changes_answer`: a query may get another answer with another
    value (its source, its limits), so that answers are cached apart (`answer_settings`)."""
    metadata = {"help": help, "scope": scope, "changes_answer": changes_answer}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on", SERVER)
    port: int = _setting(8000, "port to listen on", SERVER)
    log_level: str = _setting("info", ", ".join(LOG_LEVELS), SERVER)
    log_format: str = _setting(
        "text", "text (a readable line per request) or json (an object per line)", SERVER
    )
    otel: bool = _setting(
        False,
        "export OpenTelemetry traces over OTLP, where the OTEL_* variables say (needs the otel"
        " extra)",
        SERVER,
    )
    database: str | None = _setting(
        None, "sqlite:///… or postgresql://…; default: the embedded catalogue", changes_answer=True
    )
    upstream: str | None = _setting(
        None, "serve this APIv4 base URL instead of a database", changes_answer=True
    )
    upstream_timeout: float = _setting(10.0, "seconds allowed for one upstream request")
    upstream_max_in_flight: int = _setting(32, "upstream requests in flight at once, at most")
    upstream_retries: int = _setting(2, "retries of a failed idempotent upstream GET")
    # Not `changes_answer`: an answer over the budget has an error and is never cached, and a
    # cached answer costs no upstream request, so a cache shared across budgets bypasses none.
    max_upstream_requests: int = _setting(
        100, "upstream requests one request (a whole batch) may cause, at most"
    )
    cache_ttl: float = _setting(300.0, "seconds an upstream resource stays fresh")
    cache_stale: float = _setting(
        86400.0, "seconds a stale copy may still be served while the upstream fails"
    )
    statement_timeout: float = _setting(5.0, "seconds one SQL statement may take")
    kept_answers_bytes: int = _setting(
        16 * 2**20,
        "bytes of encoded answers the database backend keeps while the database is unchanged"
        " (0: none)",
    )
    max_depth: int = _setting(10, "deepest selection a query may have", changes_answer=True)
    max_cost: int = _setting(
        50_000,
        "most objects a query may ask for: the product of `first` along each path, summed",
        changes_answer=True,
    )
    max_aliases: int = _setting(30, "most aliases in one document", changes_answer=True)
    max_tokens: int = _setting(5_000, "most tokens in one document", changes_answer=True)
    max_selections: int = _setting(
        200, "most fields in one selection set, its fragments spread in", changes_answer=True
    )
    max_body_bytes: int = _setting(100_000, "largest request body", SERVER)
    max_batch: int = _setting(10, "most operations in one batched request", SERVER)
    request_timeout: float = _setting(10.0, "seconds one request may take")
    introspection: bool = _setting(True, "answer introspection queries", changes_answer=True)
    cors_origins: str = _setting(
        "", "comma-separated origins allowed by CORS; none by default", SERVER
    )
    shutdown_timeout: float = _setting(
        10.0, "seconds requests in flight get to finish on SIGTERM", SERVER
    )
    max_connections: int = _setting(
        1000, "connections one process serves at once: a request on one more gets 503", SERVER
    )
    max_header_bytes: int = _setting(32_768, "largest request line and headers, in bytes", SERVER)
    idle_timeout: float = _setting(
        5.0, "seconds a connection may wait for a request, or take over its headers", SERVER
    )
    response_cache_ttl: float = _setting(
        60.0,
        "seconds a query's whole answer is reused, 0 for never (over an upstream, at most the"
        " cache TTL); a minute lets repeated queries skip execution, yet an edit shows soon",
        SERVER,
    )
    warm_catalogue: bool = _setting(
        True,
        "REST backend: fetch the catalogue snapshot before serving (waiting at most the upstream"
        " timeout) and refresh it before it expires, so that no request waits for it",
        SERVER,
    )
    workers: int = _setting(1, "worker processes serving the one port", SERVER)
    cache: str | None = _setting(
        None,
        "redis://… (or rediss://, unix://) shared by every worker and host: upstream bodies,"
        " answers, persisted queries; default: each process its own memory",
        SERVER,
    )
    trusted_documents: str | None = _setting(
        None,
        "a JSON manifest of trusted documents, id to text (graphql-codegen's"
        " persisted-documents.json, Relay's map) that requests name by `documentId`; SIGHUP"
        " reads it again",
        SERVER,
    )
    require_trusted_documents: bool = _setting(
        False, "answer only the manifest's documents: text sent must be one of them", SERVER
    )
    rate_limit: int = _setting(
        0, "requests per minute per client (each operation of a batch counts), 0 for none", SERVER
    )
    rate_limit_key: str = _setting(
        "address",
        "address (the client's, as uvicorn's proxy-headers settings give it) or header:NAME"
        " (a request without it is keyed by its address)",
        SERVER,
    )
    federation: bool = _setting(
        False,
        "serve an Apollo Federation 2 subgraph (keys, `_service`, `_entities`)",
        SCHEMA,
        changes_answer=True,
    )


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return "GATEWAY_" + field.upper()


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}

_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}

# Where a value came from, in order of precedence.
FLAG, ENVIRONMENT, FILE, DEFAULT = "flag", "environment", "file", "default"


Check = Callable[[Settings], None]
"""A further check of the settings, by a layer config does not import: raises `SettingError`."""


def setting_type(name: str) -> type:
    """The setting's type without its `None`: bool, int, float or str."""
    kind = get_type_hints(Settings)[name]
    return next((base for base in (bool, int, float) if kind is base), str)


def _shown(raw: object) -> str:
    """A value as an error quotes it: text in double quotes (secrets masked), TOML's words."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return json.dumps(mask(raw), ensure_ascii=False)
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        return "an array"
    return str(raw)


def _convert(name: str, raw: object, source: str) -> Any:
    """A flag's or an environment variable's value: text (or typed by argparse) to convert."""
    kind = get_type_hints(Settings)[name]
    if isinstance(raw, kind):
        return raw
    base = setting_type(name)
    if base is bool:
        value = _BOOLEANS.get(str(raw).strip().lower())
        if value is None:
            raise ConfigError(f"{source}: expected {_EXPECTED[bool]}, got {_shown(raw)}")
        return value
    try:
        return base(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {_EXPECTED[base]}, got {_shown(raw)}") from None


def _typed(name: str, raw: object, source: str) -> Any:
    """A TOML (or JSON) value, typed already: only the setting's own type will do.

    An integer is a number for a float setting; a string is never a number, nor a number a
    string, and only `true` and `false` are booleans.
    """
    kind = get_type_hints(Settings)[name]
    if raw is None and isinstance(None, kind):  # JSON's null, for a setting whose default it is
        return None
    base = setting_type(name)
    accepted = (int, float) if base is float else (base,)
    if isinstance(raw, bool) != (base is bool) or not isinstance(raw, accepted):
        raise ConfigError(f"{source}: expected {_EXPECTED[base]}, got {_shown(raw)}")
    return float(raw) if isinstance(raw, int | float) and base is float else raw


def _table_values(table: Mapping[str, object], source: str) -> dict[str, Any]:
    """A table's values (a TOML file's, a worker's JSON): known keys only, each of its type."""
    names = [field.name for field in dataclasses.fields(Settings)]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in names:
            close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {_shown(key)}{hint}")
        values[key] = _typed(key, raw, f"{source}: {key}")
    return values


def _validated(settings: Settings, where: Mapping[str, str], checks: Sequence[Check]) -> Settings:
    """`validate` and `checks`, an error led by where the values at fault came from (`where` by
    setting)."""
    try:
        validate(settings)
        for check in checks:
            check(settings)
    except SettingError as exc:
        at_fault = " and ".join(where[name] for name in exc.settings)
        raise ConfigError(f"{at_fault}: {exc}") from None
    return settings


def find_config_file(
    flag: str | None, environ: Mapping[str, str], cwd: Path | None = None
) -> Path | None:
    """The TOML file to read: `--config`, else `GATEWAY_CONFIG`, else `./gateway.toml` if any."""
    if flag is not None:
        chosen, source = flag, "--config"
    elif CONFIG_VARIABLE in environ:
        chosen, source = environ[CONFIG_VARIABLE], CONFIG_VARIABLE
    else:
        default = Path(CONFIG_FILE) if cwd is None else cwd / CONFIG_FILE
        return default if default.is_file() else None
    if not chosen.strip():
        raise ConfigError(f"{source}: expected a file name, got {_shown(chosen)}")
    return Path(chosen).expanduser()


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # not TOML, or not even UTF-8
        raise ConfigError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None


@dataclass(frozen=True, slots=True)
class Configuration:
    """The effective settings, where each value came from, and the TOML file read, if any."""

    settings: Settings
    origins: Mapping[str, str]  # by setting: FLAG, ENVIRONMENT, FILE or DEFAULT
    file: Path | None = None

    def source(self, name: str) -> str:
        """Where the setting's value came from, as `gateway config` shows it."""
        return {
            FLAG: flag_name(name),
            ENVIRONMENT: env_name(name),
            FILE: str(self.file),
        }.get(self.origins[name], DEFAULT)

    def report(self) -> str:
        """Every setting as a TOML line with its source, secrets masked (`gateway config`)."""
        none = f"none (no --config, no {CONFIG_VARIABLE}, no ./{CONFIG_FILE})"
        lines = [f"# configuration file: {self.file or none}"]
        for field in dataclasses.fields(Settings):
            value = getattr(self.settings, field.name)
            if value is None:
                shown = f"# {field.name}: not set"
            else:
                shown = f"{field.name} = {_toml(value)}"
            lines.append(f"{shown:<48} # {self.source(field.name)}")
        return "\n".join(lines) + "\n"


def configure(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    file: Path | None = None,
    checks: Sequence[Check] = (),
) -> Configuration:
    """Each setting from its flag (None means "not given"), else its environment variable,
    else the TOML `file`, else its default; then all of them validated, and given to `checks`.

    The whole file is checked (unknown keys, types), even the keys a flag or a variable hides.
    """
    flags = flags or {}
    environ = environ or {}
    from_file = _table_values(read_config_file(file), str(file)) if file is not None else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    where: dict[str, str] = {}
    for field in dataclasses.fields(Settings):
        name = field.name
        if flags.get(name) is not None:
            where[name], origins[name] = flag_name(name), FLAG
            values[name] = _convert(name, flags[name], where[name])
        elif env_name(name) in environ:
            where[name], origins[name] = env_name(name), ENVIRONMENT
            values[name] = _convert(name, environ[env_name(name)], where[name])
        elif name in from_file:
            where[name], origins[name] = f"{file}: {name}", FILE
            values[name] = from_file[name]
        else:
            where[name], origins[name] = name, DEFAULT
    return Configuration(_validated(Settings(**values), where, checks), origins, file)


def load_settings(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    file: Path | None = None,
) -> Settings:
    """The settings of `configure`, without their sources."""
    return configure(flags, environ, file).settings


def settings_from_table(table: Mapping[str, object], source: str) -> Settings:
    """Settings from typed values (a worker's, handed down as JSON), the others their defaults."""
    where = {field.name: f"{source}: {field.name}" for field in dataclasses.fields(Settings)}
    return _validated(Settings(**_table_values(table, source)), where, ())


def answer_settings(settings: Settings) -> dict[str, object]:
    """The values of the settings that change an answer, by name: the response cache keeps the
    answers made under other values apart."""
    return {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(Settings)
        if field.metadata["changes_answer"]
    }


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(mask(value), ensure_ascii=False)
    return str(value)


# `header:NAME`, NAME an HTTP field name (RFC 9110's token).
_HEADER_KEY = re.compile(r"header:[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_SECRET_PARAMETERS = ("pass", "secret", "token", "key")


# A URL's user information, as SQLAlchemy reads it: a password runs to the first `@`, and may
# hold `/`, `?` or `#`, where `urlsplit` would end the host part and miss it.
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@]*):[^@]*@")


def mask(value: str) -> str:
    """A URL with its password, and any password-like query parameter, shown as `***`.

    `postgresql://user:secret@host/db` is shown `postgresql://user:***@host/db`; anything
    that is not such a URL is shown as it is.
    """
    if "://" not in value:
        return value
    shown = _USERINFO.sub(r"\1:***@", value, count=1)
    try:
        query = urlsplit(shown).query
    except ValueError:
        return shown
    if query:
        pairs = []
        for pair in query.split("&"):
            key, equals, _ = pair.partition("=")
            secret = equals and any(word in unquote(key).lower() for word in _SECRET_PARAMETERS)
            pairs.append(f"{key}=***" if secret else pair)
        shown = shown.replace(f"?{query}", f"?{'&'.join(pairs)}", 1)
    return shown


def _finite(settings: Settings, *names: str, zero: bool = False) -> None:
    for name in names:
        value = getattr(settings, name)
        if not (value >= 0 if zero else value > 0) or not value < math.inf:  # NaN fails both
            rule = "may not be negative or infinite" if zero else "must be finite and positive"
            raise SettingError(f"{name.replace('_', ' ')} {rule}, got {value}", name)


def validate(settings: Settings) -> None:
    if not 0 < settings.port < 65536:
        raise SettingError(f"port must be between 1 and 65535, got {settings.port}", "port")
    if settings.database is not None and settings.upstream is not None:
        raise SettingError("give a database or an upstream, not both", "database", "upstream")
    if settings.upstream is not None:
        url = urlsplit(settings.upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            shown = mask(settings.upstream)
            raise SettingError(f"upstream must be an http(s) URL, got {shown!r}", "upstream")
    if settings.cache is not None:
        _check_cache_url(settings.cache)
    _finite(
        settings,
        "upstream_timeout",
        "upstream_max_in_flight",
        "max_upstream_requests",
        "cache_ttl",
        "statement_timeout",
        "max_depth",
        "max_cost",
        "max_aliases",
        "max_tokens",
        "max_selections",
        "max_body_bytes",
        "max_batch",
        "request_timeout",
        "shutdown_timeout",
        "max_connections",
        "max_header_bytes",
        "idle_timeout",
    )
    if settings.workers < 1:
        raise SettingError(f"workers must be at least 1, got {settings.workers}", "workers")
    _finite(
        settings,
        "upstream_retries",
        "cache_stale",
        "response_cache_ttl",
        "rate_limit",
        "kept_answers_bytes",
        zero=True,
    )
    if settings.log_level not in LOG_LEVELS:
        raise SettingError(f"log level must be one of {', '.join(LOG_LEVELS)}", "log_level")
    if settings.log_format not in LOG_FORMATS:
        message = f"log format must be one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}"
        raise SettingError(message, "log_format")
    if settings.trusted_documents is not None and not settings.trusted_documents.strip():
        message = "trusted documents must name a file"
        raise SettingError(message, "trusted_documents")
    if settings.require_trusted_documents and settings.trusted_documents is None:
        message = "require trusted documents needs a manifest: give trusted documents too"
        raise SettingError(message, "require_trusted_documents")
    key = settings.rate_limit_key
    if key != "address" and not _HEADER_KEY.fullmatch(key):
        message = f"rate limit key must be address or header:NAME, got {key!r}"
        raise SettingError(message, "rate_limit_key")
    for origin in cors_origins(settings):
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc):
            message = f"CORS origin must be * or scheme://host[:port], got {origin!r}"
            raise SettingError(message, "cors_origins")


def _check_cache_url(value: str) -> None:
    """A Redis URL as redis-py reads it: redis://[[user]:password@]host[:port][/db], rediss://
    the same over TLS, unix://[[user]:password@]/path/to/socket[?db=N]."""
    shown = mask(value)
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise SettingError(f"cache must be a redis:// URL, got {shown!r}", "cache") from None
    if url.scheme in ("redis", "rediss"):
        db = url.path.strip("/")
        if not url.hostname or not (db == "" or (db.isascii() and db.isdigit())):
            message = f"cache must be redis://host[:port][/db], got {shown!r}"
            raise SettingError(message, "cache")
    elif url.scheme != "unix" or not url.path:
        message = f"cache must be a redis://, rediss:// or unix:// URL, got {shown!r}"
        raise SettingError(message, "cache")


def cors_origins(settings: Settings) -> list[str]:
    return [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
