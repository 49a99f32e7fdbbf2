"""GraphiQL as a person meets it: a real headless Chromium against a real server.

The page must render from the gateway's own files, run a query typed into it, and
never ask any other host for anything.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from starlette.requests import Request
from starlette.types import ASGIApp, Scope

from gateway.app import create_app
from gateway.config import Settings
from gateway.http.graphiql import graphiql_page, wants_graphiql
from tests.fake_upstream import FakeUpstream, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# The alias shows that our query ran, not the page's default one.
QUERY = "{ probe: categories { totalCount } }"
EXPECTED = '"totalCount": 4'

CHROME_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)


@pytest.fixture(scope="module")
def app(fake_upstream: FakeUpstream) -> ASGIApp:
    """The gateway's own app, over the fake upstream."""
    return create_app(Settings(upstream=fake_upstream.base_url))


@pytest.fixture(scope="module")
def origin(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port, in a background thread."""
    with serve_in_thread(app) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's Chromium through its chromedriver, so Selenium Manager downloads nothing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"{', '.join(missing)} not installed: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def test_graphiql_runs_a_query_without_other_hosts(origin: str, browser: webdriver.Chrome) -> None:
    browser.get(f"{origin}/graphql")
    wait = WebDriverWait(browser, 30)
    editor = "document.querySelector('.graphiql-query-editor .CodeMirror')?.CodeMirror"
    wait.until(lambda _: browser.execute_script(f"return !!{editor}"), "no query editor")
    assert browser.title == "Django Packages GraphQL"
    assert browser.find_element(By.CSS_SELECTOR, "button[data-name=headers]").is_displayed()
    assert "packages(first: 5)" in browser.execute_script(f"return {editor}.getValue()")

    browser.execute_script(f"{editor}.setValue(arguments[0])", QUERY)
    browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    result = "document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue()"
    wait.until(
        lambda _: EXPECTED in (browser.execute_script(f"return {result}") or ""),
        f"the result pane never showed {EXPECTED}",
    )

    requested = [
        message["params"]["request"]["url"]
        for entry in _log(browser, "performance")
        if (message := json.loads(entry["message"])["message"])["method"]
        == "Network.requestWillBeSent"
    ]
    requested += browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert any(url.startswith(f"{origin}/graphiql/static/") for url in requested)
    # Other schemes (data:, chrome:) never leave the browser; its own new-tab page uses chrome:.
    offsite = [
        url
        for url in requested
        if urlsplit(url).scheme in {"http", "https", "ws", "wss"}
        and not url.startswith(f"{origin}/")
    ]
    assert offsite == []
    severe = [entry for entry in _log(browser, "browser") if entry["level"] == "SEVERE"]
    assert severe == []


def _log(browser: webdriver.Chrome, kind: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = browser.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


@pytest.mark.parametrize(
    ("method", "query", "accept", "expected"),
    [
        ("GET", "", CHROME_ACCEPT, True),
        ("GET", "", "text/html", True),
        ("GET", "?query=%7B__typename%7D", CHROME_ACCEPT, False),
        ("GET", "", "*/*", False),
        ("GET", "", "", False),
        ("GET", "", "application/json, text/html", False),
        ("GET", "", "text/html;q=0.5, application/json", False),
        ("GET", "", "text/html, application/graphql-response+json;q=0.9", True),
        ("GET", "", "text/html;q=0, */*", False),
        ("POST", "", CHROME_ACCEPT, False),
    ],
)
def test_wants_graphiql(method: str, query: str, accept: str, expected: bool) -> None:
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": "/graphql",
        "query_string": query.removeprefix("?").encode(),
        "headers": [(b"accept", accept.encode())] if accept else [],
    }
    assert wants_graphiql(Request(scope)) is expected


def test_page_api_and_static_files_over_http(origin: str) -> None:
    client = httpx.Client(base_url=origin)
    page = client.get("/graphql", headers={"accept": CHROME_ACCEPT})
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert "<title>Django Packages GraphQL</title>" in page.text

    api = client.post("/graphql", json={"query": QUERY})
    assert api.json() == {"data": {"probe": {"totalCount": 4}}}

    assets = re.findall(r'(?:href|src)="(/graphiql/static/[^"]+)"', page.text)
    assert len(assets) == 6
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/graphiql/static/nope.js").status_code == 404


def test_page_config_cannot_close_its_script() -> None:
    body = bytes(graphiql_page("/api</script><script>alert(1)//").body).decode()
    assert "</script><script>alert" not in body
    assert '"endpoint": "/api\\u003c/script>\\u003cscript>alert(1)//"' in body
