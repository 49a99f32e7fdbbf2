"""The `gateway` command: serve, export-schema, query, config, mirror, documents.

It composes the gateway from its settings, importing each command's modules only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from gateway.config import (
    CONFIG_FILE,
    CONFIG_VARIABLE,
    SCHEMA,
    SERVER,
    Configuration,
    Settings,
    configure,
    env_name,
    find_config_file,
    flag_name,
    mask,
    setting_type,
)
from gateway.errors import ConfigError, SettingError
from gateway.observability import tracing

if TYPE_CHECKING:
    from strawberry.http import GraphQLHTTPResponse

EVERY_SCOPE = (SERVER, SCHEMA, "")


def check_database_url(settings: Settings) -> None:
    """A database URL the gateway's database layer can open (SQLAlchemy, only to check one)."""
    if settings.database is None:
        return
    from gateway.loaders.sql.engine import async_url

    try:
        async_url(settings.database)
    except ConfigError as exc:
        message = str(exc).replace(settings.database, mask(settings.database))
        raise SettingError(message, "database") from None


def check_opentelemetry(settings: Settings) -> None:
    """`--otel` needs the OpenTelemetry packages (imported only to see that they are there)."""
    if settings.otel and not tracing.available():
        raise SettingError(f"OpenTelemetry is not installed: {tracing.INSTALL}", "otel")


# What only other layers can check of the settings, checked with them whatever the command.
SETTINGS_CHECKS = (check_database_url, check_opentelemetry)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on standard error, not a usage dump; subcommands too say `gateway:`."""
        self.exit(2, f"gateway: error: {message}\n")


def _add_settings(parser: argparse.ArgumentParser, scopes: Sequence[str]) -> None:
    """`--config`, and one flag per setting of these scopes (`gateway serve` has them all)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"a TOML file of settings ({CONFIG_VARIABLE}; default ./{CONFIG_FILE} if present)",
    )
    for field in dataclasses.fields(Settings):
        if field.metadata["scope"] not in scopes:
            continue
        kind = setting_type(field.name)
        default = "" if field.default in (None, "") else f"; default {field.default}"
        help = f"{field.metadata['help']} ({env_name(field.name)}{default})"
        if kind is bool:
            parser.add_argument(
                flag_name(field.name), action=argparse.BooleanOptionalAction, help=help
            )
        else:
            parser.add_argument(flag_name(field.name), type=kind, help=help)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="A GraphQL gateway for Django Packages.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve /graphql, GraphiQL and /healthz")
    _add_settings(serve, EVERY_SCOPE)

    export = commands.add_parser("export-schema", help="print the schema's SDL")
    _add_settings(export, (SCHEMA,))

    config = commands.add_parser(
        "config", help="print the effective settings, where each came from (secrets masked)"
    )
    _add_settings(config, EVERY_SCOPE)

    query = commands.add_parser("query", help="run one query in-process and print the JSON")
    query.add_argument("query", help="the GraphQL document")
    query.add_argument("--variables", help="variables as a JSON object")
    query.add_argument("--operation-name", help="the operation to run")
    _add_settings(query, (SCHEMA, ""))

    mirror = commands.add_parser(
        "mirror", help="copy an APIv4's catalogue into a SQLite or PostgreSQL database"
    )
    mirror.add_argument("--from", dest="source", required=True, metavar="APIV4_URL")
    mirror.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="DATABASE_URL",
        help="sqlite:///… or postgresql://…",
    )
    mirror.add_argument("--concurrency", type=int, default=4, help="pages read at once")

    documents = commands.add_parser("documents", help="trusted documents: check a manifest")
    actions = documents.add_subparsers(dest="action", required=True, parser_class=_Parser)
    check = actions.add_parser(
        "check",
        help="check that every document of a manifest parses, validates and keeps within the"
        " query limits: one line per bad document, exit status 1 if any",
    )
    check.add_argument("path", metavar="PATH", help="the manifest: a JSON object, id to text")
    _add_settings(check, (SCHEMA, ""))
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {field.name: getattr(args, field.name, None) for field in dataclasses.fields(Settings)}


def _configuration(args: argparse.Namespace) -> Configuration:
    """The settings from the command's flags, the environment and the TOML file, validated."""
    file = find_config_file(args.config, os.environ)
    return configure(_flags(args), os.environ, file, SETTINGS_CHECKS)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.backends import check_backend

    settings = _configuration(args).settings
    # Once, here: a backend that cannot serve stops start-up with one line, before any worker.
    asyncio.run(check_backend(settings))
    # On SIGTERM or Ctrl-C uvicorn stops listening, lets requests in flight finish (cancelling
    # any still running after the shutdown timeout, which it takes in whole seconds), closes
    # the backend, then re-raises the signal: the process ends as killed by SIGTERM, the
    # status supervisors expect. With workers, each one does so, and then the parent.
    if settings.workers == 1:
        from gateway.app import create_app
        from gateway.observability.memory import dump_snapshots_on_signal
        from gateway.worker import server_options

        dump_snapshots_on_signal()
        uvicorn.run(create_app(settings), **server_options(settings))
        return 0
    from gateway.compose import schema_for, trusted_documents_for
    from gateway.worker import serve_workers

    # Once, here, as the backend: a manifest that cannot serve stops start-up before any worker.
    trusted_documents_for(settings, schema_for(settings))
    return serve_workers(settings)


def _export_schema(args: argparse.Namespace) -> int:
    from gateway.compose import schema_for

    print(schema_for(_configuration(args).settings).as_str())
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(_configuration(args).report())
    return 0


async def run_query(
    settings: Settings,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> GraphQLHTTPResponse:
    """`gateway query`: one operation, in this process, over the backend `settings` name."""
    from gateway.backends import open_backend
    from gateway.compose import schema_for
    from gateway.run import run_operation

    schema = schema_for(settings, documents_process=False)
    async with open_backend(settings) as backend:
        return await run_operation(
            schema, backend, query, variables, operation_name, timeout=settings.request_timeout
        )


def _query(args: argparse.Namespace) -> int:
    variables: Any = None
    if args.variables is not None:
        try:
            variables = orjson.loads(args.variables)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--variables is not valid JSON: {exc}") from None
        if not isinstance(variables, dict):
            raise ConfigError("--variables must be a JSON object")
    settings = _configuration(args).settings
    from strawberry.exceptions import MissingQueryError
    from strawberry.schema.exceptions import CannotGetOperationTypeError

    try:
        body = asyncio.run(run_query(settings, args.query, variables, args.operation_name))
    except MissingQueryError:
        raise ConfigError("the query is empty") from None
    except CannotGetOperationTypeError as exc:
        raise ConfigError(_no_operation(exc.operation_name)) from None
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 1 if body.get("errors") else 0


def _no_operation(name: str | None) -> str:
    """Why the document has no operation to run, as one line (the name quoted short)."""
    from gateway.schema.pagination import shown

    if name is None:
        return "the document has several operations (or none): pass --operation-name"
    return f"the document has no operation named {shown(name)}"


def _mirror(args: argparse.Namespace) -> int:
    from gateway.errors import MirrorError
    from gateway.loaders.sql.mirror import mirror_to, progress_to

    try:
        with progress_to(sys.stderr) as progress:
            summary = asyncio.run(
                mirror_to(args.source, args.target, concurrency=args.concurrency, progress=progress)
            )
    except MirrorError as exc:
        sys.stderr.write(f"gateway: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("gateway: error: interrupted; an unfinished mirror changes nothing\n")
        return 130
    sys.stdout.write(summary.report())
    return 0


def _check_documents(args: argparse.Namespace) -> int:
    from gateway.compose import query_limits, schema_for
    from gateway.documents.trusted_documents import check_manifest

    settings = _configuration(args).settings
    path = Path(args.path)
    bad = check_manifest(path, schema_for(settings), query_limits(settings))
    for line in bad:
        sys.stdout.write(f"{path}: {line}\n")
    if not bad:
        sys.stdout.write(f"{path}: every document parses, validates and keeps within the limits\n")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            code = _serve(args)
        elif args.command == "export-schema":
            code = _export_schema(args)
        elif args.command == "config":
            code = _config(args)
        elif args.command == "mirror":
            code = _mirror(args)
        elif args.command == "documents":
            code = _check_documents(args)
        else:
            code = _query(args)
    except ConfigError as exc:
        sys.stderr.write(f"gateway: error: {exc}\n")
        code = 2
    sys.exit(code)
