"""Benchmarks run by hand: `.venv/bin/python -m bench.finalize_bench`."""
