"""The HTTP layer around `/graphql`: its front, the bounds of a connection and of a request,
negotiation, HTTP caching, the middlewares in front of the view, GraphiQL and the plain endpoints.

The top room under the app: it may import every other room and `gateway.backends` (what `/readyz`
asks); nothing imports it but the app and the process's composition (`gateway.operations`,
`gateway.run`, `gateway.worker`).
"""
