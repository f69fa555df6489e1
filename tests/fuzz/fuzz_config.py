"""atheris entry point: python tests/fuzz/fuzz_config.py [libFuzzer flags]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from tests.fuzz import targets  # noqa: E402

FUNCTIONS = [targets.config_text]


def one_input(data: bytes) -> None:
    FUNCTIONS[data[0] % len(FUNCTIONS) if data else 0](data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
