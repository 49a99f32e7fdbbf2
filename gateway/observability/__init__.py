"""Watching the gateway work: its metrics, logs and traces, the event loop's stalls, its memory.

Every other room counts and traces through these, so they import nothing of the gateway but
`gateway.errors` and `gateway.middleware`.
"""
