"""The gateway's benchmarks, installed as `mtls_gateway_bench`.

- `harness`: the `mtls-gateway-bench` command (the gateway beside nginx and HAProxy) and what it is
  made of: the throwaway PKI, the peers, the load generators, CPU accounting, the crypto floor,
  statistics and the report. The scenarios reuse its peers and clients.
- `scenarios`: one `python -m mtls_gateway_bench.scenarios.NAME` tool per question (memory per idle
  connection, CPU by stage, instructions counted by valgrind, paired runs, a soak, ...).
- `micro`: pytest-benchmark files for single parts (`python -m pytest --pyargs
  mtls_gateway_bench.micro.NAME --benchmark-enable`).
"""
