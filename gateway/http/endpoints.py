"""The plain endpoints beside `/graphql`: `/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.backends import OpenBackend
from gateway.observability import metrics as gateway_metrics


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when the backend answers (and what else it checked); 503 with the reason if not."""
    backend: OpenBackend = request.app.state.opened
    ready, checks, reason = await backend.ready()
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {"status": "unavailable", "reason": reason, "checks": checks}
    return JSONResponse(body, status_code=503)


async def metrics(request: Request) -> Response:
    """Prometheus's text format (or OpenMetrics, if asked for): every worker's counts."""
    body, media_type = gateway_metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": media_type})
