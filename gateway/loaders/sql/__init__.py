"""The database backend, and what fills a database the gateway owns.

Bottom up: `rows.py` (the tables' rows as the gateway writes them), `tables.py` (the schema),
`trigrams.py` (pg_trgm's similarity, for SQLite), `failures.py` (what a client is told when the
database fails), `engine.py` (a URL to an async engine, how the backend's statements are read:
on the drivers, and the database's change stamp), `features.py` (what a database offers),
`kept.py` (answers kept across requests under a change stamp); the statements, `search.py`,
`sort_keys.py`, `relations.py` and `statements.py` (each batch's statement, built once per shape
and kept); `backend.py` (`SqlBackend`, one statement per batch, bound to the batch's values, or
its kept answers). `writer.py` writes a `Dataset` in one transaction for `mirror.py` (an APIv4
copied into the tables) and for the embedded catalogue (`gateway/demo/embedded.py`). Each module
imports only modules named before it.
"""
