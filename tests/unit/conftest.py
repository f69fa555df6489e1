"""Unit-suite fixtures: run the native twins (trust store and TLS pump) and the pure ones side by side.

A test module opts in with ``pytestmark = pytest.mark.usefixtures("trust_impl")``: each of its
tests then runs once per implementation, with that implementation chosen for every store, cache
and verifier the test builds. Only the modules whose code path goes through the twins opt in, so
the suite does not double everything. The native run is skipped when gateway._trust_c is not built.
"""
from __future__ import annotations

import pytest

from gateway import tls, trust

needs_native_trust = pytest.mark.skipif(
    trust.NATIVE is None, reason="gateway._trust_c is not built (run `python -m pip install -e .`)")

TRUST_IMPLS = [
    pytest.param("python", id="trust-python"),
    pytest.param("native", id="trust-native", marks=needs_native_trust),
]


@pytest.fixture(params=TRUST_IMPLS)
def trust_impl(request) -> trust.Implementation:
    """The trust implementation under test, made the module-wide choice for the test's duration."""
    mode = "off" if request.param == "python" else "on"
    chosen = trust.set_native(mode)
    assert chosen == request.param
    # the TLS pump follows the same choice when it is built (its own tests cover a missing one)
    tls.set_native(mode if tls.NATIVE_PUMP is not None else "off")
    yield trust.impl
    trust.set_native("auto")
    tls.set_native("auto")
