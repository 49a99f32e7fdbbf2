"""Automatic persisted queries: Apollo's APQ protocol, over GET and POST, alone or in a batch.

A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": …}` with the SHA-256 of
its document, and no `query`. A hash the gateway knows runs its document; an unknown one is
answered with the error Apollo clients look for (message `PersistedQueryNotFound`, code
`PERSISTED_QUERY_NOT_FOUND`, HTTP 200 whatever the media type), and the client sends the hash
again with the document: the gateway checks that the hash is the document's, runs it (or answers
it from the response cache), and remembers it unless the document was refused (it does not parse,
or breaks a rule or a limit). As with Apollo Server, an extension the gateway cannot use (another
version, a hash that is not the document's) refuses the whole request with HTTP 400
(`PersistedQueryRefused`).

What is kept is the document without its ignored tokens (comments, whitespace, commas), which
means the same: a client cannot make the gateway keep a kilobyte of comment for a day. A document
longer than `MAX_DOCUMENT_BYTES` even so is refused before it runs (HTTP 400,
PERSISTED_QUERY_TOO_LARGE): a client may still send it as text, without a hash.

Documents are kept for `TTL` seconds from when they were sent, in a `Store` (see
gateway/caching/response_cache.py): this process's memory, bounded in bytes, least recently used out
first, and with `--cache` Redis too (where they expire, or are evicted by Redis's own policy), so
that a hash registered through one process runs on every other. A forgotten document costs the
client one more round trip, nothing else.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSyntaxError, Lexer, Source, TokenKind, strip_ignored_characters
from strawberry.types import ExecutionResult

from gateway.caching.response_cache import Store
from gateway.documents.offload import off_the_loop
from gateway.errors import PersistedQueryNotFound, PersistedQueryRefused, PersistedQueryTooLarge

VERSION = 1
MAX_BYTES = 4 * 2**20  # the documents kept by one process
# Seconds a document is kept: any client may register documents, so even in Redis they must not
# pile up for ever; a client whose document expired registers it again in one round trip.
TTL = 24 * 3600.0
MAX_DOCUMENT_BYTES = 32 * 2**10  # the longest document kept, without its ignored tokens
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Lookup:
    """The document to run (None: the request has none), and the hash to remember it by with
    the text to keep under it."""

    query: str | None
    remember: str | None = None
    printed: str = ""


class PersistedQueries:
    def __init__(self, store: Store, *, max_tokens: int) -> None:
        """`max_tokens`: the query limit; a document with more is refused as it runs, and is
        not printed to be kept."""
        self.store = store
        self.max_tokens = max_tokens

    async def resolve(self, query: str | None, extensions: Mapping[str, Any] | None) -> Lookup:
        """The document a request runs: its own, or the one its hash names.

        Raises `PersistedQueryNotFound` for a hash the gateway does not know,
        `PersistedQueryRefused` for an APQ extension it cannot read or a hash that is not the
        document's, and `PersistedQueryTooLarge` for a document too long to keep.
        """
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            return Lookup(query)
        if not isinstance(persisted, dict):
            raise PersistedQueryRefused("`extensions.persistedQuery` must be an object")
        version = persisted.get("version")
        if type(version) is not int or version != VERSION:
            raise PersistedQueryRefused(
                f"Unsupported persisted query version {version!r}: only version {VERSION} is"
                " supported"
            )
        sha = persisted.get("sha256Hash")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise PersistedQueryRefused(
                "`extensions.persistedQuery.sha256Hash` must be a SHA-256 hash in hexadecimal"
            )
        sha = sha.lower()
        if query is None:
            found = await self.store.get(_key(sha))
            if found is None:
                raise PersistedQueryNotFound("PersistedQueryNotFound")
            return Lookup(found[0].decode())
        if hashlib.sha256(query.encode()).hexdigest() != sha:
            raise PersistedQueryRefused("provided sha does not match query")
        # Lexing a document at the token limit takes tens of milliseconds: not on the loop.
        printed = await off_the_loop(_printed, query, self.max_tokens)
        if printed is None:  # refused as it runs, for the same reason: nothing to keep
            return Lookup(query)
        size = len(printed.encode())
        if size > MAX_DOCUMENT_BYTES:
            raise PersistedQueryTooLarge(
                f"A persisted query is kept up to {MAX_DOCUMENT_BYTES} bytes without its"
                f" comments and whitespace; this one has {size}: send it without"
                " `extensions.persistedQuery`"
            )
        return Lookup(query, remember=sha, printed=printed)

    async def remember(self, lookup: Lookup) -> None:
        """Keep a document the client sent with its hash, once it has been answered."""
        if lookup.remember is not None:
            await self.store.set(_key(lookup.remember), lookup.printed.encode(), TTL)


def is_not_found(result: ExecutionResult) -> bool:
    """An unknown hash: the protocol's next step, not a request error (HTTP 200 even under
    `application/graphql-response+json`, or Apollo clients would give up on APQ)."""
    return any(
        isinstance(error.original_error, PersistedQueryNotFound) for error in result.errors or ()
    )


def _printed(text: str, max_tokens: int) -> str | None:
    """`text` without its ignored tokens; None if it does not lex or has over `max_tokens`
    tokens (counted first, as the parser stops there: lexing all of them could take long)."""
    try:
        if len(text) > max_tokens and _token_count(text, max_tokens + 1) > max_tokens:
            return None
        return strip_ignored_characters(text)
    except GraphQLSyntaxError:
        return None


def _token_count(text: str, most: int) -> int:
    """The number of tokens in `text`, counted up to `most`."""
    lexer = Lexer(Source(text))
    count = 0
    while count < most and lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def _key(sha: str) -> str:
    return f"gateway:apq:{sha}"
