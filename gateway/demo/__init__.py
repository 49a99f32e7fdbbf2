"""Demo and test fixtures: a generated Django Packages catalogue and a fake APIv4 that serves it."""
