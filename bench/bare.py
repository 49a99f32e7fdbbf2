"""A bare Starlette endpoint that answers every POST with the same bytes: the ceiling of the
server stack the gateway runs on (uvicorn with uvloop and httptools, as `gateway serve` has it).

    python -m bench.bare --port 8000 --body answer.json

bench/compare.py sets a response-cache hit of the gateway against it, answering the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def bare_app(body: bytes) -> Starlette:
    async def answer(request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/graphql", answer, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="the file of bytes to answer")
    args = parser.parse_args()
    app = bare_app(args.body.read_bytes())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
