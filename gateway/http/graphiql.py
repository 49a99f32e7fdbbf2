"""GraphiQL, served by the gateway itself: the page, its static files, and when to show it.

Every asset is vendored under `static/graphiql` (see `scripts/vendor-graphiql.sh`), so
the playground makes no request to any other host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Protocol

from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from gateway.http.negotiation import quality

STATIC_PATH = "/graphiql/static"

DEFAULT_QUERY = """\
# Welcome to the Django Packages GraphQL API.
# Press the run button (or Ctrl-Enter) to run a query.
{
  packages(first: 5) {
    totalCount
    nodes {
      title
      category {
        title
      }
      grids(first: 3) {
        nodes {
          title
        }
      }
    }
  }
}"""

# Directory names carry the package versions, so an upgrade changes every URL.
_PAGE = Template("""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Django Packages GraphQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="$static/graphiql-4.1.2/graphiql.min.css">
<link rel="stylesheet" href="$static/plugin-explorer-4.0.6/style.css">
<style>
body { margin: 0; }
#graphiql { height: 100vh; }
</style>
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="$static/react-18.3.1/react.production.min.js"></script>
<script src="$static/react-dom-18.3.1/react-dom.production.min.js"></script>
<script src="$static/graphiql-4.1.2/graphiql.min.js"></script>
<script src="$static/plugin-explorer-4.0.6/index.umd.js"></script>
<script>
const config = $config;

async function fetcher(params, options) {
  const response = await fetch(config.endpoint, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json, application/json",
      ...options?.headers,
    },
    body: JSON.stringify(params),
  });
  return response.json();
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: config.defaultQuery,
    isHeadersEditorEnabled: true,
    plugins: [GraphiQLPluginExplorer.explorerPlugin()],
  }),
);
</script>
</body>
</html>
""")

_JSON_TYPES = ("application/graphql-response+json", "application/json")


class HTTPRequest(Protocol):
    """What `wants_graphiql` reads; Starlette's and Strawberry's requests both fit."""

    @property
    def method(self) -> str: ...

    @property
    def query_params(self) -> Mapping[str, object]: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def graphiql_page(endpoint: str = "/graphql") -> HTMLResponse:
    """The GraphiQL page, sending its queries to `endpoint`.

    `no-cache` because the page names the asset versions, which change on upgrade.
    """
    config = json.dumps({"endpoint": endpoint, "defaultQuery": DEFAULT_QUERY})
    # "<" escaped so that no value can close the <script> element.
    html = _PAGE.substitute(static=STATIC_PATH, config=config.replace("<", "\\u003c"))
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


def wants_graphiql(request: HTTPRequest) -> bool:
    """Whether `request` is a browser asking for the page rather than the API.

    Like express-graphql, the page is shown only when the Accept header prefers `text/html`
    to JSON, so `*/*` (curl, httpx) gets the API; like Strawberry, a GET that carries
    `query` is a GraphQL-over-HTTP request and is executed, not shown.
    """
    if request.method != "GET" or "query" in request.query_params:
        return False
    accept = request.headers.get("accept", "")
    html = quality(accept, "text/html")
    return html > 0 and html > max(quality(accept, media_type) for media_type in _JSON_TYPES)


class _VersionedStaticFiles(StaticFiles):
    """Static files whose URL changes with their content, so browsers may keep them forever."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


graphiql_static = Mount(
    STATIC_PATH,
    app=_VersionedStaticFiles(directory=Path(__file__).parent / "static" / "graphiql"),
    name="graphiql_static",
)
