"""pytest-benchmark files: `python -m pytest --pyargs mtls_gateway_bench.micro.NAME --benchmark-enable`."""
