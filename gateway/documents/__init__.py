"""A document's reading and its limits: read once, measured, refused or kept, off the event loop.

Below the schema and the engine, which ask it to read, check and keep documents: it imports
nothing of the gateway but `gateway.errors`, `gateway.internals` and `gateway.observability`.
"""
