"""The benchmark's sections, one module each; benchmarks/throughput.py runs them."""
