"""HTTP caching of answers: ETags per representation, Cache-Control and 304s.

The response cache (response_cache.py) keeps answers; this says what their HTTP headers are. A
GET answered from the cache is public for the rest of its time and revalidates by ETag; the same
answer as `application/graphql-response+json` is another representation with its own ETag.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import response_cache
from gateway.negotiation import GRAPHQL_RESPONSE
from gateway.response_cache import Cached


def cache_headers(request: Request, response: Response, answers: list[Cached | None]) -> Response:
    """HTTP caching for a GET: a cached answer is public for the rest of its time, has an ETag,
    and a matching `If-None-Match` gets a 304; any other answer is not to be stored. Over POST,
    a cached answer has its ETag only. `answers`: each operation's cached answer, or None."""
    single = response.status_code == 200 and len(answers) == 1 and response.body[:1] != b"["
    cached = answers[0] if single else None
    if cached is None:
        if request.method == "GET":
            response.headers["cache-control"] = "no-store"
        return response
    headers = validators(request.method, cached, response.headers["content-type"])
    if not_modified(request.method, request.headers.get("if-none-match", ""), headers):
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
