"""HTTP caching of answers: ETags per representation, Cache-Control and 304s.

The response cache (response_cache.py) keeps answers; this says what their HTTP headers are. A
GET answered from the cache is public for the rest of its time and revalidates by ETag; the same
answer as `application/graphql-response+json` is another representation with its own ETag.
`answer` makes a single operation's whole response, `cache_headers` adds the same headers to a
response Strawberry's view made (a batch's, a refusal's).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.caching import response_cache
from gateway.caching.response_cache import Cached
from gateway.http.negotiation import GRAPHQL_RESPONSE

_NO_STORE = (b"cache-control", b"no-store")


class Answer:
    """A response sent as it is (an ASGI app): its status, headers and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def answer(
    method: str,
    if_none_match: str,
    body: bytes,
    content_type: str,
    cached: Cached | None,
    status: int = 200,
) -> Answer:
    """A single operation's answer: `body` as `content_type`. A cached answer (`cached`, at
    200) has its validators, and is a 304 to a GET whose `If-None-Match` names its ETag; any
    other answer to a GET is not to be stored."""
    head = [(b"content-length", b"%d" % len(body)), (b"content-type", content_type.encode())]
    if cached is None or status != 200:
        if method == "GET":
            head.append(_NO_STORE)
        return Answer(status, head, body)
    if method != "GET":  # its ETag only, and never a 304
        head.append((b"etag", _etag(cached, content_type).encode()))
        return Answer(200, head, body)
    caching = validators(method, cached, content_type)
    fields = [(name.encode(), value.encode("latin-1")) for name, value in caching.items()]
    if not_modified(method, if_none_match, caching):
        return Answer(304, fields)
    return Answer(200, head + fields, body)


def cache_headers(
    method: str, if_none_match: str, response: Response, answers: list[Cached | None]
) -> Response:
    """HTTP caching for a GET: a cached answer is public for the rest of its time, has an ETag,
    and a matching `If-None-Match` gets a 304; any other answer is not to be stored. Over POST,
    a cached answer has its ETag only. `answers`: each operation's cached answer, or None."""
    single = response.status_code == 200 and len(answers) == 1 and response.body[:1] != b"["
    cached = answers[0] if single else None
    if cached is None:
        if method == "GET":
            response.headers["cache-control"] = "no-store"
        return response
    headers = validators(method, cached, response.headers["content-type"])
    if not_modified(method, if_none_match, headers):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response


def not_modified(method: str, if_none_match: str, validators: dict[str, str]) -> bool:
    """Whether a cached answer with these `validators` is a 304 to this request: a GET whose
    `If-None-Match` names its ETag."""
    return method == "GET" and response_cache.matches(if_none_match, validators["etag"])


def validators(method: str, cached: Cached, content_type: str) -> dict[str, str]:
    """The caching headers of a cached answer as `content_type`: its ETag, and for a GET, public
    for the rest of its time, varying on Accept."""
    etag = _etag(cached, content_type)
    if method != "GET":
        return {"etag": etag}
    return {
        "etag": etag,
        "cache-control": f"public, max-age={response_cache.max_age(cached)}",
        "vary": "Accept",
    }


def _etag(cached: Cached, content_type: str) -> str:
    """The ETag of the answer as `content_type`: the same body under another media type is
    another representation, with its own validator (the answer varies on Accept)."""
    if content_type == GRAPHQL_RESPONSE:
        return cached.etag.removesuffix('"') + '-graphql-response"'
    return cached.etag
