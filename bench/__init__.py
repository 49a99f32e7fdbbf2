"""Benchmarks: scripts that print figures, run by hand (`python -m bench.load`), not tests."""
