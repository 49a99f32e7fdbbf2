"""What the settings make of the schema: its query limits, its engine, its trusted documents.

Shared by the app (create_app) and the `gateway` command (query, export-schema, documents
check), so that both build the schema the same way from the same settings.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings
from gateway.documents.limits import QueryLimits
from gateway.documents.reading import Readings
from gateway.documents.trusted_documents import TrustedDocuments
from gateway.engine.engine import Engine
from gateway.schema import GatewaySchema, build_schema
from gateway.validating import Validation, read_valid


def query_limits(settings: Settings) -> QueryLimits:
    """The query limits `settings` set."""
    return QueryLimits(
        max_depth=settings.max_depth,
        max_cost=settings.max_cost,
        max_aliases=settings.max_aliases,
        max_tokens=settings.max_tokens,
        max_selections=settings.max_selections,
        introspection=settings.introspection,
    )


def schema_for(
    settings: Settings, engine: Engine | None = None, *, documents_process: bool = True
) -> GatewaySchema:
    """The schema `settings` ask for: their query limits, and a federation subgraph or not;
    its operations run by the plans of `engine` (a new one by default) where they cover them.
    New documents are read and validated in the documents' process (gateway/validating.py);
    without `documents_process`, it starts no child Python for them (gateway/documents/offload.py):
    one operation has no event loop to keep free."""
    if engine is None:
        engine = Engine(settings.max_cost)
    limits = query_limits(settings)
    readings = Readings(
        limits.max_tokens,
        limits.max_selections,
        reader=read_valid,
        reader_args=(Validation(limits, settings.federation),),
        apart=documents_process,
    )
    return build_schema(
        limits, federation=settings.federation, extensions=[engine], readings=readings
    )


def trusted_documents_for(settings: Settings, schema: GatewaySchema) -> TrustedDocuments:
    """The manifest `settings` name, read (`ManifestError` if it cannot serve), if any."""
    path = settings.trusted_documents
    return TrustedDocuments(
        schema,
        None if path is None else Path(path).expanduser(),
        required=settings.require_trusted_documents,
    )
