"""CORS on `/graphql`, as a browser would negotiate it over the wire.

Closed by default: no CORS header on any answer and no preflight honoured. With `cors_origins`
the listed origins (or any, with `*`) may POST and GET, with the headers GraphQL clients send.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from tests.fake_upstream import FakeUpstream, serve_in_thread

ALLOWED = "https://app.example"
ALSO_ALLOWED = "http://localhost:3000"
REFUSED = "https://evil.example"

QUERY = {"query": "{ categories { totalCount } }"}
CLIENT_HEADERS = "content-type, authorization, x-request-id, apollo-require-preflight"


@pytest.fixture(scope="module")
def gateways(fake_upstream: FakeUpstream) -> Iterator[dict[str, httpx.Client]]:
    """Clients of three gateways: CORS closed (the default), open to two origins, open to all."""
    configured = {"closed": "", "listed": f"{ALLOWED}, {ALSO_ALLOWED}", "any": "*"}
    with (
        serve_in_thread(create_app(_settings(fake_upstream, configured["closed"]))) as closed,
        serve_in_thread(create_app(_settings(fake_upstream, configured["listed"]))) as listed,
        serve_in_thread(create_app(_settings(fake_upstream, configured["any"]))) as any_origin,
        httpx.Client(base_url=closed, timeout=10) as closed_client,
        httpx.Client(base_url=listed, timeout=10) as listed_client,
        httpx.Client(base_url=any_origin, timeout=10) as any_client,
    ):
        yield {"closed": closed_client, "listed": listed_client, "any": any_client}


def _settings(upstream: FakeUpstream, origins: str) -> Settings:
    return Settings(upstream=upstream.base_url, cors_origins=origins)


def _preflight(
    client: httpx.Client, origin: str, method: str = "POST", headers: str = CLIENT_HEADERS
) -> httpx.Response:
    return client.options(
        "/graphql",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def _post(client: httpx.Client, origin: str) -> httpx.Response:
    response = client.post("/graphql", json=QUERY, headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert "errors" not in response.json()
    return response


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def _listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


# Closed: the default.


def test_closed_by_default_a_preflight_is_not_honoured(gateways: dict[str, httpx.Client]) -> None:
    response = _preflight(gateways["closed"], ALLOWED)
    assert response.status_code == 405
    assert _cors_headers(response) == {}


def test_closed_by_default_answers_carry_no_cors_headers(
    gateways: dict[str, httpx.Client], upstream: FakeUpstream
) -> None:
    response = _post(gateways["closed"], ALLOWED)
    assert _cors_headers(response) == {}
    assert "origin" not in _listed(response.headers.get("vary", ""))


# Open to listed origins.


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
def test_a_listed_origin_passes_the_preflight(
    gateways: dict[str, httpx.Client], origin: str
) -> None:
    response = _preflight(gateways["listed"], origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert _listed(response.headers["access-control-allow-methods"]) == {"get", "post"}
    assert _listed(CLIENT_HEADERS) <= _listed(response.headers["access-control-allow-headers"])
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in _listed(response.headers["vary"])


@pytest.mark.parametrize("header", ["apollographql-client-name", "x-apollo-operation-name"])
def test_apollo_client_headers_pass_the_preflight(
    gateways: dict[str, httpx.Client], header: str
) -> None:
    response = _preflight(gateways["listed"], ALLOWED, headers=f"content-type, {header}")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_a_listed_origin_may_post_and_get(
    gateways: dict[str, httpx.Client], upstream: FakeUpstream
) -> None:
    posted = _post(gateways["listed"], ALLOWED)
    assert posted.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in _listed(posted.headers["vary"])
    count = len(upstream.dataset.categories)
    assert posted.json() == {"data": {"categories": {"totalCount": count}}}

    got = gateways["listed"].get("/graphql", params=QUERY, headers={"Origin": ALSO_ALLOWED})
    assert got.status_code == 200
    assert got.headers["access-control-allow-origin"] == ALSO_ALLOWED
    assert got.json() == posted.json()


def test_another_origin_is_refused(
    gateways: dict[str, httpx.Client], upstream: FakeUpstream
) -> None:
    preflight = _preflight(gateways["listed"], REFUSED)
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    # A simple request is answered (the server cannot tell a browser from curl), but without
    # the header the browser does not let the page read it.
    assert "access-control-allow-origin" not in _post(gateways["listed"], REFUSED).headers


@pytest.mark.parametrize(
    ("method", "headers"),
    [("DELETE", "content-type"), ("PUT", "content-type"), ("POST", "content-type, x-secret")],
)
def test_other_methods_and_headers_are_refused_even_to_a_listed_origin(
    gateways: dict[str, httpx.Client], method: str, headers: str
) -> None:
    response = _preflight(gateways["listed"], ALLOWED, method=method, headers=headers)
    assert response.status_code == 400


def test_only_graphql_is_opened(gateways: dict[str, httpx.Client]) -> None:
    response = gateways["listed"].get("/healthz", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert _cors_headers(response) == {}


# Open to any origin.


def test_any_origin_with_a_star(gateways: dict[str, httpx.Client], upstream: FakeUpstream) -> None:
    preflight = _preflight(gateways["any"], REFUSED)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert _post(gateways["any"], REFUSED).headers["access-control-allow-origin"] == "*"
