"""The mtls-gateway-bench command and its parts (bench/README.md describes the method)."""
