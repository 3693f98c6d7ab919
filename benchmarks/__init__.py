"""Benchmarks: run them as scripts (python benchmarks/throughput.py); their modules
import each other and tests.harness from the repository root."""
