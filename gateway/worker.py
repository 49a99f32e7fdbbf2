"""`gateway serve --workers N`: N worker processes serving one port, and each one's app.

The parent binds the port and supervises the workers with uvicorn's supervisor, which starts
them as fresh processes (and starts another if one dies) and builds each one's app by
importing `WORKER_APP` and calling it. The parent has already read and validated the settings
and checked the backend; it hands the effective settings down in an environment variable, so
that every worker serves with exactly the same ones, whatever happens meanwhile to the
environment or the TOML file. It also makes the directory where the workers keep their metrics
(`PROMETHEUS_MULTIPROC_DIR`), and removes it once they have all stopped. With trusted documents,
SIGHUP goes on to every worker, which reads its manifest again
(gateway/documents/trusted_documents.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.applications import Starlette

from gateway.config import Settings, settings_from_table
from gateway.errors import ConfigError
from gateway.http.connection_limits import HeadBoundedProtocol
from gateway.observability import metrics
from gateway.observability.observe import logging_config

WORKER_APP = "gateway.worker:app_from_environment"

# Internal: not a setting, hence not `GATEWAY_*`.
SETTINGS_VARIABLE = "_GATEWAY_WORKER_SETTINGS"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for `gateway serve`, one process or several."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # One line per request, the gateway's own (gateway/observability/observe.py), not uvicorn's.
        "log_config": logging_config(settings.log_format, settings.log_level),
        "access_log": False,
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout),
        # What one connection may hold: its time and bytes before its request's headers are
        # complete (gateway/http/connection_limits.py), and how many may be open at once.
        "http": HeadBoundedProtocol,
        "timeout_keep_alive": settings.idle_timeout,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # uvicorn refuses a request once `limit_concurrency` are open, its own counted.
        "limit_concurrency": settings.max_connections + 1,
        # On every answer, uvicorn's own refusals too: a browser takes a body for the type it
        # is sent as, never for the page or script it might guess (an error quoting markup).
        "headers": [("X-Content-Type-Options", "nosniff")],
    }


def hand_down(settings: Settings, environ: MutableMapping[str, str]) -> None:
    """Put the settings where the workers (started with this environment) will find them."""
    environ[SETTINGS_VARIABLE] = orjson.dumps(dataclasses.asdict(settings)).decode()


def settings_from_environment() -> Settings:
    raw = os.environ.get(SETTINGS_VARIABLE)
    if raw is None:
        raise ConfigError(f"{SETTINGS_VARIABLE} is not set: workers are started by gateway serve")
    try:
        table = orjson.loads(raw)
    except orjson.JSONDecodeError:
        table = None
    if not isinstance(table, dict):
        raise ConfigError(f"{SETTINGS_VARIABLE}: expected a JSON object")
    return settings_from_table(table, SETTINGS_VARIABLE)


def app_from_environment() -> Starlette:
    """The app factory uvicorn calls in each worker."""
    from gateway.app import create_app

    return create_app(settings_from_environment())


def serve_workers(settings: Settings) -> int:
    """Serve with `settings.workers` processes until SIGTERM or SIGINT; the exit status.

    On the signal each worker shuts down gracefully, as a single process does; then the
    parent ends as killed by that signal too. If a worker fails to start, all stop: status 1.
    """
    from uvicorn import Config
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        received: signal.Signals | None = None

        def stop(self, received: signal.Signals) -> None:
            # The workers close their copies of the socket as they shut down: then it stops
            # listening, and a new connection is refused rather than left waiting.
            self.received = received
            for sock in self.sockets:
                sock.close()

        def handle_term(self) -> None:
            self.stop(signal.SIGTERM)
            super().handle_term()

        def handle_int(self) -> None:
            self.stop(signal.SIGINT)
            super().handle_int()

        def handle_hup(self) -> None:
            # With trusted documents, each worker reads its manifest again and serves on;
            # otherwise uvicorn's own: each worker replaced by a new one.
            if settings.trusted_documents is None:
                super().handle_hup()
                return
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    hand_down(settings, os.environ)
    config = Config(WORKER_APP, factory=True, workers=settings.workers, **server_options(settings))
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    # The workers count in files of one directory, which `/metrics` sums, whichever answers.
    with metrics.multiprocess_directory(os.environ):
        supervisor.run()
    if supervisor.received is not None:
        signal.signal(supervisor.received, signal.SIG_DFL)
        signal.raise_signal(supervisor.received)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.stderr.write("gateway: error: a worker failed to start (its log is above)\n")
        return 1
    return 0
