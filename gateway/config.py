"""Settings: defaults, overridden by `GATEWAY_*` environment variables, overridden by flags.

With neither a database nor an upstream the gateway serves its embedded catalogue.

Every value is validated here, once, so that a wrong setting stops the gateway at start-up
with one clear line instead of failing a request later.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.loaders.database import async_url


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database: str | None = None
    upstream: str | None = None
    upstream_timeout: float = 10.0
    log_level: str = "info"


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _env_name(field: str) -> str:
    return "GATEWAY_" + field.upper()


def _convert(field: dataclasses.Field[Any], raw: object, source: str) -> Any:
    kind = get_type_hints(Settings)[field.name]
    if isinstance(raw, kind):
        return raw
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {kind.__name__}, got {raw!r}") from None


def load_settings(
    flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags (None means "not given"), then the environment, then defaults."""
    flags = flags or {}
    environ = environ or {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        if flags.get(field.name) is not None:
            values[field.name] = _convert(
                field, flags[field.name], "--" + field.name.replace("_", "-")
            )
        elif _env_name(field.name) in environ:
            values[field.name] = _convert(
                field, environ[_env_name(field.name)], _env_name(field.name)
            )
    settings = Settings(**values)
    validate(settings)
    return settings


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
        async_url(settings.database)
    if not 0 < settings.upstream_timeout < math.inf:  # NaN fails both comparisons
        raise ConfigError(
            f"upstream timeout must be finite and positive, got {settings.upstream_timeout}"
        )
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
