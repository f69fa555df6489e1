"""The fuzz targets of tests/fuzz under hypothesis: any input gives a value or our own error."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import targets

_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(st.binary(max_size=2048))
def test_http1_request_reader(data):
    targets.http1_request(data)


@_settings
@given(st.binary(max_size=2048))
def test_http1_response_reader(data):
    targets.http1_response(data)


@_settings
@given(st.binary(max_size=2048))
def test_header_encoders_twins(data):
    targets.header_twins(data)


@_settings
@given(st.binary(min_size=1, max_size=300))
def test_certificate_fields_and_verifier(data):
    targets.identity(data)


@_settings
@given(st.binary(max_size=1024))
def test_config_loader(data):
    targets.config_text(data)
