"""Trusted documents: the documents the gateway's own clients were built with, named by id.

A manifest is a JSON object mapping each document's id to its text, as graphql-codegen's client
preset writes `persisted-documents.json` (the ids are the SHA-256 of the text) and as Relay writes
its persisted-query map (any string id). With `--trusted-documents PATH` a request names a document
by `documentId` (a POST body's member, or the GET parameter: the GraphQL-over-HTTP persisted
documents proposal, as Hive Router reads it), where `sha256:<hex>` also finds the key `<hex>`; or
by `extensions.persistedQuery.sha256Hash` (Apollo Client's persisted-queries link), which finds the
document whose text has that SHA-256. Variables and `operationName` come as usual; the document's
text then goes on as if the request had sent it (response cache, ETag and 304 included). An id the
manifest does not hold refuses the whole request: HTTP 400, PERSISTED_DOCUMENT_NOT_FOUND.

With `--require-trusted-documents` the gateway runs the manifest's documents only: text is answered
when it is one of them (by its SHA-256), and anything else, an APQ registration too, is refused with
HTTP 400, PERSISTED_DOCUMENT_ID_REQUIRED; an APQ hash finds the manifest's documents only. Without
it, text is answered as ever, and a hash the manifest does not hold goes on to APQ.

The manifest is read at start-up, where one that cannot be read, or holds a document that does not
parse or validate against the schema, stops the gateway with one line. SIGHUP reads it again, in
every process: requests go on meanwhile, each served by the manifest in place when it arrived, and a
faulty manifest keeps the documents in use and logs one line why. `gateway documents check` also
holds each document to the query limits (gateway/documents/limits.py), for a client's CI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import orjson
from graphql import GraphQLError, GraphQLSchema, GraphQLSyntaxError, parse, validate
from strawberry import Schema
from strawberry.http import GraphQLRequestData

from gateway.documents.limits import QueryLimits, document_errors
from gateway.errors import (
    ManifestError,
    PersistedDocumentIdRequired,
    PersistedDocumentNotFound,
    PersistedDocumentRefused,
    classify,
)
from gateway.internals import graphql_schema

logger = logging.getLogger("gateway")

SHA256_PREFIX = "sha256:"

Operations = GraphQLRequestData | list[GraphQLRequestData]


NOT_FOUND = "No trusted document has this id or hash"
ID_REQUIRED = "Only trusted documents run here: send the `documentId` of one"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """The documents by id, and by the SHA-256 (hex) of their text."""

    documents: Mapping[str, str]
    by_sha256: Mapping[str, str]

    @classmethod
    def of(cls, documents: Mapping[str, str]) -> Manifest:
        return cls(documents, {_sha256(text): text for text in documents.values()})

    def find(self, document_id: str) -> str | None:
        """The text of the document `document_id` names: its key, or `sha256:<hex>` for `<hex>`."""
        text = self.documents.get(document_id)
        if text is None and document_id.startswith(SHA256_PREFIX):
            text = self.documents.get(document_id.removeprefix(SHA256_PREFIX))
        return text


EMPTY = Manifest.of({})


def _read(path: Path) -> Manifest:
    """The manifest at `path`, or `ManifestError` if it cannot be read or is not one."""
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object of document ids and texts")
    for key, text in raw.items():
        if not isinstance(text, str):
            raise ManifestError(f"{path}: the document {key!r} is not a string")
    return Manifest.of(raw)


def _problems(manifest: Manifest, check: Callable[[str], Sequence[GraphQLError]]) -> list[str]:
    """One line per document that `check` finds at fault, its id first."""
    lines = []
    for key, text in manifest.documents.items():
        errors = check(text)
        if errors:
            found = "; ".join(f"{classify(error)}: {error.message}" for error in errors)
            lines.append(f"{key}: {found}")
    return lines


def _invalid(schema: GraphQLSchema, text: str) -> list[GraphQLError]:
    """Why the document does not parse, or does not validate against the schema."""
    try:
        document = parse(text)
    except GraphQLSyntaxError as error:
        return [error]
    return validate(schema, document)


def load_manifest(path: Path, schema: Schema) -> Manifest:
    """The manifest at `path` if every document in it parses and validates, else
    `ManifestError` naming the first at fault."""
    manifest = _read(path)
    faults = _problems(manifest, lambda text: _invalid(graphql_schema(schema), text))
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise ManifestError(f"{path}: {faults[0]}{more}")
    return manifest


def check_manifest(path: Path, schema: Schema, limits: QueryLimits) -> list[str]:
    """`gateway documents check`: one line per document that does not parse or validate, or
    goes past one of `limits`."""
    manifest = _read(path)
    graphql = graphql_schema(schema)
    return _problems(manifest, lambda text: document_errors(graphql, limits, text))


class TrustedDocuments:
    """The manifest in use (`--trusted-documents`), and whether only its documents run."""

    def __init__(self, schema: Schema, path: Path | None = None, *, required: bool = False) -> None:
        """Read the manifest at `path` (`ManifestError` if it cannot serve); none without one."""
        self.schema = schema
        self.path = path
        self.required = required
        self.manifest = EMPTY if path is None else load_manifest(path, schema)
        self._reloading = asyncio.Lock()

    async def reload(self) -> None:
        """Read the manifest again, off the event loop; a faulty one keeps the documents in use
        and is logged in one line."""
        if self.path is None:
            return
        async with self._reloading:
            try:
                manifest = await asyncio.to_thread(load_manifest, self.path, self.schema)
            except ManifestError as exc:
                logger.warning(
                    "trusted documents: kept the %d in use: %s", len(self.manifest.documents), exc
                )
                return
            self.manifest = manifest
            logger.info("trusted documents: %d read from %s", len(manifest.documents), self.path)

    @overload
    def resolve(
        self, operations: GraphQLRequestData, named: Mapping[str, str] | bytes
    ) -> GraphQLRequestData: ...
    @overload
    def resolve(
        self, operations: list[GraphQLRequestData], named: Mapping[str, str] | bytes
    ) -> list[GraphQLRequestData]: ...
    def resolve(self, operations: Operations, named: Mapping[str, str] | bytes) -> Operations:
        """Each operation with its trusted document, found by its `documentId` (in `named`: the
        GET parameters or the POST body, as Strawberry does not keep it) or APQ hash; or
        `PersistedDocumentNotFound`, `PersistedDocumentIdRequired`, `PersistedDocumentRefused`
        (both an id and text)."""
        manifest = self.manifest  # the one in place when the request arrived, for all of it
        if isinstance(operations, GraphQLRequestData):
            [document_id] = _document_ids(named, 1)
            return self._resolve(manifest, operations, document_id)
        ids = _document_ids(named, len(operations))
        return [self._resolve(manifest, *pair) for pair in zip(operations, ids, strict=True)]

    def _resolve(
        self, manifest: Manifest, operation: GraphQLRequestData, document_id: object
    ) -> GraphQLRequestData:
        if document_id is not None:
            if operation.query is not None:
                raise PersistedDocumentRefused("Send a `documentId` or a `query`, not both")
            text = manifest.find(document_id) if isinstance(document_id, str) else None
            if text is None:
                raise PersistedDocumentNotFound(NOT_FOUND)
            return dataclasses.replace(operation, query=text)
        if operation.query is None:
            extensions = operation.extensions or {}
            persisted = extensions.get("persistedQuery")
            sha = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
            text = manifest.by_sha256.get(sha.lower()) if isinstance(sha, str) else None
            if text is not None:  # the manifest's: not an APQ document to remember
                others = {
                    name: value for name, value in extensions.items() if value is not persisted
                }
                return dataclasses.replace(operation, query=text, extensions=others or None)
            if self.required and persisted is not None:
                raise PersistedDocumentNotFound(NOT_FOUND)
            return operation
        if self.required and _sha256(operation.query) not in manifest.by_sha256:
            raise PersistedDocumentIdRequired(ID_REQUIRED)
        return operation


def _document_ids(named: Mapping[str, str] | bytes, count: int) -> list[object]:
    """Each operation's `documentId` (None without one), from the GET parameters or the body."""
    if not isinstance(named, bytes):
        return [named.get("documentId")]
    if b'"documentId"' not in named:  # most bodies: no need to decode them again
        return [None] * count
    body = orjson.loads(named)  # Strawberry has decoded it already: it is an operation or a list
    operations = body if isinstance(body, list) else [body]
    return [operation.get("documentId") for operation in operations]


@contextmanager
def reloaded_on_sighup(documents: TrustedDocuments) -> Iterator[None]:
    """While serving, SIGHUP reads the manifest again (not where there is none, or off the main
    thread, where signals cannot be handled)."""
    if documents.path is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = loop.create_task(documents.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
