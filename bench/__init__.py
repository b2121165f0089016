"""The clickstream benchmarks: run `.venv/bin/python -m bench.run` from the repository root (see bench/README.md)."""
