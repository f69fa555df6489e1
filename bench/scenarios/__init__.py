"""Runnable benchmarks, one question each: `python -m mtls_gateway_bench.scenarios.NAME --help`."""
