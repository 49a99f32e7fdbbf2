"""Settings: defaults, overridden by `GATEWAY_*` environment variables, overridden by flags.

With neither a database nor an upstream the gateway serves its embedded catalogue. Each
setting is declared once here, with its help text; the command line's flags are made from
these declarations. Every value is validated here, once, so that a wrong setting stops the
gateway at start-up with one clear line instead of failing a request later.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

SERVER = "server"  # a setting of `gateway serve` only; the others also apply to `gateway query`


def _setting(default: Any, help: str, scope: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "scope": scope})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on", SERVER)
    port: int = _setting(8000, "port to listen on", SERVER)
    log_level: str = _setting("info", ", ".join(LOG_LEVELS), SERVER)
    database: str | None = _setting(
        None, "sqlite:///… or postgresql://…; default: the embedded catalogue"
    )
    upstream: str | None = _setting(None, "serve this APIv4 base URL instead of a database")
    upstream_timeout: float = _setting(10.0, "seconds allowed for one upstream request")
    upstream_max_in_flight: int = _setting(32, "upstream requests in flight at once, at most")
    upstream_retries: int = _setting(2, "retries of a failed idempotent upstream GET")
    cache_ttl: float = _setting(300.0, "seconds an upstream resource stays fresh")
    cache_stale: float = _setting(
        86400.0, "seconds a stale copy may still be served while the upstream fails"
    )
    statement_timeout: float = _setting(5.0, "seconds one SQL statement may take")
    max_depth: int = _setting(10, "deepest selection a query may have")
    max_cost: int = _setting(
        50_000, "most objects a query may ask for: the product of `first` along each path, summed"
    )
    max_aliases: int = _setting(30, "most aliases in one document")
    max_tokens: int = _setting(5_000, "most tokens in one document")
    max_body_bytes: int = _setting(100_000, "largest request body", SERVER)
    max_batch: int = _setting(10, "most operations in one batched request", SERVER)
    request_timeout: float = _setting(10.0, "seconds one request may take")
    introspection: bool = _setting(True, "answer introspection queries")
    cors_origins: str = _setting(
        "", "comma-separated origins allowed by CORS; none by default", SERVER
    )
    shutdown_timeout: float = _setting(
        10.0, "seconds requests in flight get to finish on SIGTERM", SERVER
    )


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return "GATEWAY_" + field.upper()


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


def _convert(name: str, raw: object, source: str) -> Any:
    kind = get_type_hints(Settings)[name]
    if isinstance(raw, kind):
        return raw
    if kind is bool:
        value = _BOOLEANS.get(str(raw).strip().lower())
        if value is None:
            raise ConfigError(f"{source}: expected true or false, got {raw!r}")
        return value
    base = float if kind is float else int if kind is int else str
    try:
        return base(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {base.__name__}, got {raw!r}") from None


def load_settings(
    flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags (None means "not given"), then the environment, then defaults."""
    flags = flags or {}
    environ = environ or {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        if flags.get(field.name) is not None:
            values[field.name] = _convert(field.name, flags[field.name], flag_name(field.name))
        elif env_name(field.name) in environ:
            raw = environ[env_name(field.name)]
            values[field.name] = _convert(field.name, raw, env_name(field.name))
    settings = Settings(**values)
    validate(settings)
    return settings


def _positive(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not 0 < value < math.inf:  # NaN fails both comparisons
            label = name.replace("_", " ")
            raise ConfigError(f"{label} must be finite and positive, got {value}")


def validate(settings: Settings) -> None:
    if not 0 < settings.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {settings.port}")
    if settings.database is not None and settings.upstream is not None:
        raise ConfigError("give a database or an upstream, not both")
    if settings.upstream is not None:
        url = urlsplit(settings.upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"upstream must be an http(s) URL, got {settings.upstream!r}")
    if settings.database is not None:
        from gateway.loaders.database import async_url  # SQLAlchemy only for a URL to check

        async_url(settings.database)
    _positive(
        settings,
        "upstream_timeout",
        "upstream_max_in_flight",
        "cache_ttl",
        "statement_timeout",
        "max_depth",
        "max_cost",
        "max_aliases",
        "max_tokens",
        "max_body_bytes",
        "max_batch",
        "request_timeout",
        "shutdown_timeout",
    )
    if settings.upstream_retries < 0 or not 0 <= settings.cache_stale < math.inf:
        raise ConfigError("upstream retries and cache stale may not be negative")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    for origin in cors_origins(settings):
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ConfigError(f"CORS origin must be * or scheme://host[:port], got {origin!r}")


def cors_origins(settings: Settings) -> list[str]:
    return [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
