"""The pure core: lines in, numbers out. No clock, no files, no threads, no logging, no
Prometheus (tests/unit/test_architecture.py checks every module in this folder)."""
