"""python -m mtls_gateway_bench.harness -> the mtls-gateway-bench command."""
import sys

from .cli import main

sys.exit(main())
