"""Benchmark harness for issue 7: `python -m bench.run --scale 1.0` (see bench/README.md)."""
