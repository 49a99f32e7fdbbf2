"""The database backend and what fills a database the gateway owns.

Bottom up: `rows.py` (the tables' rows as the product writes them), `tables.py` (the schema),
`engine.py` (URLs to async engines), `failures.py`, `features.py` (what a database offers);
then the statements, `search.py` and `sort_keys.py`; `backend.py` (`SqlBackend`, one statement
per batch) reads; `writer.py` writes a `Dataset` in one transaction, which `mirror.py` (a REST
APIv4 copied into the tables) and `embedded.py` (the demo catalogue as a SQLite file) use.
Each module imports only the ones listed before it.
"""
