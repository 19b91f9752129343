"""Benchmarks on the real local broker: `python -m bench.run` (or `make bench`).

Each benchmark measures a figure beside its baseline in the same run; bench.run writes
docs/BENCHMARKS.md.
"""
