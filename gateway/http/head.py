"""`HEAD /graphql`: answered as the GET would be, headers only.

CDNs, proxies and health checkers send HEAD with a GET's query string; the view runs it as that
GET (same status, content type, ETag and length) and the body is dropped on its way out.
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

__all__ = ["as_get"]


def as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """The GET scope to run for a HEAD request, and a `send` that passes the headers only."""

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return {**scope, "method": "GET"}, headers_only
