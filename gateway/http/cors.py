"""Cross-origin access to `/graphql`: closed unless origins are configured.

A browser page on another origin may call the gateway only if `cors_origins` lists that origin
(or `*`); then Starlette's CORSMiddleware answers the preflight and marks the responses.
Without origins nothing is added, so browsers keep the same-origin policy.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

__all__ = ["ALLOWED_HEADERS", "ALLOWED_METHODS", "cors"]

ALLOWED_METHODS = ["GET", "POST"]

# What GraphQL clients send besides the CORS-safelisted headers (Accept, Content-Type, …), which
# Starlette always allows: credentials, tracing, Apollo's client identification and CSRF headers.
ALLOWED_HEADERS = [
    "authorization",
    "x-request-id",
    "apollographql-client-name",
    "apollographql-client-version",
    "apollo-require-preflight",
    "x-apollo-operation-name",
]


def cors(origins: list[str], app: ASGIApp) -> ASGIApp:
    """`app` open to `origins` (`*`: any), or `app` itself when there are none."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
    )
