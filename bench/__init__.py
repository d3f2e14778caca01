"""Benchmarks: `python -m bench [NAME ...]` runs `bench/bench_NAME.py` modules and writes results.

Each module exposes ``run(quick: bool) -> dict[str, Any]`` returning a flat-ish dict of measurements;
by convention timing entries are ``{"median_s": ..., "runs": [...]}`` and each result may carry a
``"table"`` list of ``[label, value, target]`` rows for the summary printed at the end.
"""
