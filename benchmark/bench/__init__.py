"""Speed benchmarks and the GPU check, run from a checkout as ``python -m benchmark.bench.<name>``; not installed."""
