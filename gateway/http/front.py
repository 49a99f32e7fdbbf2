"""The app's front: `/graphql` straight to its endpoint, everything else through Starlette.

Most requests are GraphQL ones. Starlette's own layers (its error and exception middleware, its
router) do nothing for them that the endpoint does not: it answers every method and turns its
own failures into answers. `Front` sends each HTTP request for `/graphql` through the app's
middleware (the request's id, counters and log line, its hang-up) to the endpoint directly, and
leaves the rest (the other paths, WebSockets, the lifespan) to Starlette's stack.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.middleware import HttpMiddleware

GRAPHQL_PATH = "/graphql"


class Front(Starlette):
    """A Starlette app whose HTTP requests for `/graphql` go to `graphql` through the app's
    middleware alone."""

    def __init__(self, *, graphql: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self._graphql = graphql
        self._graphql_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Under a root path, Starlette's router knows where the route is.
        if scope["type"] == "http" and scope["path"] == GRAPHQL_PATH and not scope.get("root_path"):
            scope["app"] = self
            await self._graphql_app()(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def _graphql_app(self) -> ASGIApp:
        """`graphql` inside the app's middleware: made at the first request, with Starlette's
        stack (after which no middleware may be added)."""
        if self._graphql_stack is None:
            self.middleware_stack = self.middleware_stack or self.build_middleware_stack()
            app = self._graphql
            for cls, args, kwargs in reversed(self.user_middleware):
                middleware = cls(app, *args, **kwargs)
                # Only HTTP requests come this way: straight to what handles them.
                app = middleware.handle if isinstance(middleware, HttpMiddleware) else middleware
            self._graphql_stack = app
        return self._graphql_stack
