"""gateway.paths: request-target normalisation before rules match (RFC 3986 2.1, 5.2.4, 6.2.2).

Table-driven cases for every refusal and every RFC 3986 5.4 example that is about paths, then
properties (hypothesis): the function is idempotent, leaves the query alone, and -- the one that
matters -- whatever it forwards routes to the same rule in the gateway and in every modelled
backend, and (default settings) to the rule a full-decoding backend would have applied to the
request as the client sent it. No sockets.
"""
from __future__ import annotations

import posixpath
import re
import types
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.config import RuleSpec
from gateway.errors import HTTPProtocolError
from gateway.paths import DEFAULT_POLICY, PathPolicy, normalize_path, normalize_target
from gateway.routes import RouteTable, split_path

REJECT = PathPolicy()
KEEP = PathPolicy(escaped_slashes="keep")
DECODE = PathPolicy(escaped_slashes="decode")
NO_MERGE = PathPolicy(merge_slashes=False)
ALL_POLICIES = [PathPolicy(m, e) for m in (True, False) for e in ("reject", "keep", "decode")]


def refusal(policy: PathPolicy, target: bytes) -> str:
    with pytest.raises(HTTPProtocolError) as info:
        normalize_target(policy, target)
    assert info.value.status == 400
    return info.value.reason


# --- the fast path ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    b"/", b"/a", b"/api/v1/users/42", b"/a.b/c.d", b"/a./b..", b"/x?y=1", b"/x?q=%2e%2e/..//;\\",
    b"/file.tar.gz", b"/~user/-_", b"/a:b@c!$&'()*+,=",
])
def test_a_clean_target_is_returned_as_the_same_object(target):
    for policy in ALL_POLICIES:
        assert normalize_target(policy, target) is target


def test_a_target_normalising_to_itself_is_returned_as_the_same_object():
    target = b"/a%20b/%C3%A9"
    assert normalize_target(REJECT, target) is target


def test_asterisk_form_passes_untouched():
    assert normalize_target(REJECT, b"*") == b"*"


# --- RFC 3986 6.2.2: case and percent-encoding normalisation ----------------------------------------

@pytest.mark.parametrize("target, expected", [
    (b"/%61dmin/x", b"/admin/x"),                      # 6.2.2.2: unreserved decoded
    (b"/%41%5a%61%7a%30%39", b"/AZaz09"),
    (b"/%2d%2E%5f%7E", b"/-._~"),
    (b"/%7euser", b"/~user"),
    (b"/a%3ab", b"/a%3Ab"),                            # 6.2.2.1: reserved stays, hex upper-cased
    (b"/a%3Ab", b"/a%3Ab"),
    (b"/%e2%82%ac", b"/%E2%82%AC"),                    # non-ASCII stays encoded
    (b"/a%20b", b"/a%20b"),
    (b"/%25", b"/%25"),                                # "%" itself stays encoded:
    (b"/%252e%252e/admin", b"/%252e%252e/admin"),      # never a second decoding
    (b"/%253B", b"/%253B"),
    (b"/a%3fb", b"/a%3Fb"),                            # an encoded "?" is data, not the query
    (b"/a%23b", b"/a%23b"),
    (b"/a%3bb", b"/a%3Bb"),                            # an encoded ";" is data, not a parameter
])
def test_percent_encoding_normalisation(target, expected):
    assert normalize_target(REJECT, target) == expected


# --- dot segments, slashes ----------------------------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    (b"/pub/../admin/x", b"/admin/x"),
    (b"/pub/%2e%2e/admin/x", b"/admin/x"),
    (b"/pub/%2E%2E/admin/x", b"/admin/x"),
    (b"/pub/.%2e/admin/x", b"/admin/x"),
    (b"/pub/%2e./admin/x", b"/admin/x"),
    (b"/./admin/x", b"/admin/x"),
    (b"/%2e/admin/x", b"/admin/x"),
    (b"//admin/x", b"/admin/x"),
    (b"///admin//x//", b"/admin/x/"),
    (b"/../x", b"/x"),                                 # RFC 3986 5.2.4: the root does not climb
    (b"/../../../x", b"/x"),
    (b"/..", b"/"),
    (b"/.", b"/"),
    (b"/a/b/..", b"/a/"),                              # a final dot segment leaves the slash
    (b"/a/b/.", b"/a/b/"),
    (b"/a/", b"/a/"),
    (b"/a//../b", b"/b"),                              # merged first: "//" is "/"
    (b"/a/...", b"/a/..."),                            # only "." and ".." are dot segments
    (b"/a/.../b", b"/a/.../b"),
    (b"/a/.b/..c", b"/a/.b/..c"),
])
def test_dot_segments_and_merged_slashes(target, expected):
    assert normalize_target(REJECT, target) == expected


@pytest.mark.parametrize("target, expected", [
    (b"//admin/x", b"//admin/x"),
    (b"/a//b/", b"/a//b/"),
    (b"/a//../b", b"/a/b"),                            # RFC 3986 5.2.4 pops the empty segment
    (b"/a/./b//./c", b"/a/b//c"),
    (b"/../x", b"/x"),
])
def test_merge_slashes_off_keeps_empty_segments(target, expected):
    assert normalize_target(NO_MERGE, target) == expected


# --- RFC 3986 5.4: the reference resolution examples that are about paths -----------------------------
# Base "http://a/b/c/d;p?q". The target is the merged path of RFC 3986 5.2.3 (the base's path up to
# its last "/", then the reference; an absolute-path reference as it is) and the expectation is the
# example's path and query. Examples about the scheme, the authority, an empty reference or a
# fragment (http1 refuses fragments) are left out.
RFC3986_5_4 = [
    # 5.4.1 normal examples
    ("g", "/b/c/g"), ("./g", "/b/c/g"), ("g/", "/b/c/g/"), ("/g", "/g"), ("g?y", "/b/c/g?y"),
    (";x", "/b/c/;x"), ("g;x", "/b/c/g;x"), ("g;x?y", "/b/c/g;x?y"), (".", "/b/c/"), ("./", "/b/c/"),
    ("..", "/b/"), ("../", "/b/"), ("../g", "/b/g"), ("../..", "/"), ("../../", "/"),
    ("../../g", "/g"),
    # 5.4.2 abnormal examples
    ("../../../g", "/g"), ("../../../../g", "/g"), ("/./g", "/g"), ("/../g", "/g"), ("g.", "/b/c/g."),
    (".g", "/b/c/.g"), ("g..", "/b/c/g.."), ("..g", "/b/c/..g"), ("./../g", "/b/g"),
    ("./g/.", "/b/c/g/"), ("g/./h", "/b/c/g/h"), ("g/../h", "/b/c/h"), ("g;x=1/./y", "/b/c/g;x=1/y"),
    ("g;x=1/../y", "/b/c/y"), ("g?y/./x", "/b/c/g?y/./x"), ("g?y/../x", "/b/c/g?y/../x"),
]


def _merged(reference: str) -> bytes:
    return (reference if reference.startswith("/") else "/b/c/" + reference).encode()


@pytest.mark.parametrize("reference, expected", RFC3986_5_4)
def test_rfc3986_section_5_4_examples(reference, expected):
    # ";" is only data to RFC 3986: "keep" is the setting that reads it so
    assert normalize_target(KEEP, _merged(reference)) == expected.encode()
    if ";" not in reference:
        assert normalize_target(REJECT, _merged(reference)) == expected.encode()
        assert normalize_target(NO_MERGE, _merged(reference)) == expected.encode()
    # and through absolute-form, as the RFC writes them
    absolute = b"http://a" + _merged(reference)
    assert normalize_target(KEEP, absolute) == expected.encode()


# --- absolute-form and the query ----------------------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    (b"https://a.example/x/../y?q=1", b"/y?q=1"),
    (b"https://a.example:8443/admin", b"/admin"),
    (b"HTTP://A.EXAMPLE/%61", b"/a"),
    (b"https://a.example", b"/"),
    (b"https://a.example?q", b"/?q"),
    (b"http://[::1]:8080//admin?x", b"/admin?x"),
])
def test_absolute_form_becomes_origin_form(target, expected):
    assert normalize_target(REJECT, target) == expected


@pytest.mark.parametrize("query", [b"?", b"?a=%2e%2e/../b//c", b"?x=%2F%5c;y\\z", b"?%zz%4", b"??a=b?"])
def test_the_query_is_never_altered(query):
    for policy in ALL_POLICIES:
        assert normalize_target(policy, b"/pub/../admin/x" + query) == b"/admin/x" + query
        assert normalize_target(policy, b"/a" + query) == b"/a" + query


# --- refusals -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, reason", [
    (b"/admin%2fx", "path_escaped_slash"),
    (b"/admin%2Fx", "path_escaped_slash"),
    (b"/admin%5cx", "path_escaped_slash"),
    (b"/admin%5Cx", "path_escaped_slash"),
    (b"/pub/..%2f..%2fadmin", "path_escaped_slash"),
    (b"/x;y", "path_parameter"),
    (b"/pub/..;/admin/x", "path_parameter"),
    (b"/a;jsessionid=1", "path_parameter"),
    (b"/a\\b", "path_backslash"),
    (b"/pub\\..\\admin", "path_backslash"),
    (b"/a%zz", "path_bad_escape"),
    (b"/a%4", "path_bad_escape"),
    (b"/a%", "path_bad_escape"),
    (b"/a%%41", "path_bad_escape"),
    (b"/a%u002f", "path_bad_escape"),                 # IIS's %u form
    (b"/a%g0", "path_bad_escape"),
    (b"/a%00", "path_control_byte"),
    (b"/a%0a", "path_control_byte"),
    (b"/a%0D%0A", "path_control_byte"),
    (b"/a%1f", "path_control_byte"),
    (b"/a%7f", "path_control_byte"),
    (b"/a\x00", "path_control_byte"),                 # http1 refuses these; HTTP/2 might not
    (b"/a b", "path_control_byte"),
    (b"/a\x7f", "path_control_byte"),
    (b"/a\x80", "path_non_ascii"),
    (b"/\xc3\xa9", "path_non_ascii"),
    (b"/%c0%af", "path_overlong_utf8"),               # "/" in two bytes
    (b"/%C0%AE%C0%AE/admin", "path_overlong_utf8"),   # "." in two bytes
    (b"/%c1%9c", "path_overlong_utf8"),               # "\" in two bytes
    (b"/%e0%80%af", "path_overlong_utf8"),            # "/" in three bytes
    (b"/%f0%80%80%af", "path_overlong_utf8"),         # "/" in four bytes
    (b"ftp:/x", "path_bad_target"),
    (b"", "path_bad_target"),
    (b"a/b", "path_bad_target"),
])
def test_refusals_under_the_defaults(target, reason):
    assert refusal(DEFAULT_POLICY, target) == reason


@pytest.mark.parametrize("policy", [KEEP, DECODE, NO_MERGE], ids=repr)
@pytest.mark.parametrize("target, reason", [
    (b"/a\\b", "path_backslash"), (b"/a%zz", "path_bad_escape"), (b"/a%00", "path_control_byte"),
    (b"/a\xff", "path_non_ascii"), (b"/%c0%af", "path_overlong_utf8"),
])
def test_refusals_that_no_setting_lifts(policy, target, reason):
    assert refusal(policy, target) == reason


def test_a_refusal_happens_before_anything_reaches_a_rule():
    # the whole path is checked, also the part a dot segment would remove
    assert refusal(REJECT, b"/a/%2f/../b") == "path_escaped_slash"
    assert refusal(REJECT, b"/a/%zz/../b") == "path_bad_escape"


def test_well_formed_utf8_stays_encoded():
    assert normalize_target(REJECT, b"/%c3%a9t%c3%a9") == b"/%C3%A9t%C3%A9"
    assert normalize_target(REJECT, b"/%e0%a0%80%f0%90%80%80") == b"/%E0%A0%80%F0%90%80%80"


# --- escaped_slashes = "keep" and "decode" ------------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    (b"/admin%2fx", b"/admin%2Fx"),
    (b"/admin%5cx", b"/admin%5Cx"),
    (b"/pub/..%2F..%2Fadmin", b"/pub/..%2F..%2Fadmin"),     # one segment, not dots
    (b"/x;y", b"/x;y"),
    (b"/pub/..;/admin", b"/pub/..;/admin"),
    (b"/pub/../a;b/%2e%2e/c", b"/c"),
])
def test_keep_passes_escaped_slashes_and_parameters_as_data(target, expected):
    assert normalize_target(KEEP, target) == expected


@pytest.mark.parametrize("target, expected", [
    (b"/admin%2fx", b"/admin/x"),
    (b"/admin%5Cx", b"/admin/x"),                     # "\" is a separator to those who decode it
    (b"/pub%2F..%2Fadmin/x", b"/admin/x"),
    (b"/pub%2f%2f%2fadmin", b"/pub/admin"),
    (b"/x;y", b"/x"),                                 # Servlet 6.0 3.5.2: parameters removed
    (b"/a;x=1/b;y=2/c", b"/a/b/c"),
    (b"/pub/..;x=%2f/admin/x", b"/admin/x"),          # removed before decoding
    (b"/a;/b", b"/a/b"),
    (b"/a%3Bb", b"/a%3Bb"),                           # an encoded ";" is data
])
def test_decode_turns_escaped_slashes_into_separators_and_drops_parameters(target, expected):
    assert normalize_target(DECODE, target) == expected


def test_decode_with_merge_off():
    assert normalize_target(PathPolicy(False, "decode"), b"/a%2F%2Fb") == b"/a//b"


# --- the policy ---------------------------------------------------------------------------------------

def test_policy_defaults_follow_the_listener_defaults():
    assert DEFAULT_POLICY == PathPolicy(config.DEFAULT_MERGE_SLASHES, config.DEFAULT_ESCAPED_SLASHES)
    assert set(config.ESCAPED_SLASHES) == {"reject", "keep", "decode"}
    fields = config.ListenerSpec.__dataclass_fields__
    assert fields["merge_slashes"].default is config.DEFAULT_MERGE_SLASHES
    assert fields["escaped_slashes"].default == config.DEFAULT_ESCAPED_SLASHES
    spec = types.SimpleNamespace(merge_slashes=False, escaped_slashes="keep")
    assert PathPolicy.from_listener(spec) == PathPolicy(False, "keep")
    assert hash(PathPolicy()) == hash(PathPolicy(True, "reject"))


def test_policy_refuses_an_unknown_setting():
    with pytest.raises(ValueError):
        PathPolicy(escaped_slashes="allow")


# --- backends, modelled -------------------------------------------------------------------------------

def rfc3986_remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4 as written, the input and output buffers and rules A-E: an oracle
    independent of the implementation's segment list."""
    inp, out = path, b""
    while inp:
        if inp.startswith(b"../"):
            inp = inp[3:]
        elif inp.startswith(b"./"):
            inp = inp[2:]
        elif inp.startswith(b"/./"):
            inp = inp[2:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../") or inp == b"/..":
            inp = b"/" + inp[4:] if inp.startswith(b"/../") else b"/"
            cut = out.rfind(b"/")
            out = out[:cut] if cut >= 0 else b""
        elif inp in (b".", b".."):
            inp = b""
        else:
            end = inp.find(b"/", 1)
            segment = inp if end < 0 else inp[:end]
            out += segment
            inp = inp[len(segment):]
    return out


def merge(path: bytes) -> bytes:
    return re.sub(rb"/{2,}", b"/", path)


def backend_decode_dots_merge(path: bytes) -> bytes:
    """(a) many frameworks: full percent-decoding, then dot segments, then merged slashes."""
    return merge(rfc3986_remove_dot_segments(unquote_to_bytes(path)))


def backend_decode_merge_dots(path: bytes) -> bytes:
    """(a') nginx, Go's path.Clean, posixpath: full decoding, slashes merged, then dot segments."""
    return rfc3986_remove_dot_segments(merge(unquote_to_bytes(path)))


def backend_http_server(path: bytes) -> bytes:
    """(b) Python's http.server: leading "//" collapsed (gh-87389), unquoted, normpath'd by
    SimpleHTTPRequestHandler.translate_path, which keeps a trailing slash."""
    path = re.sub(rb"^/{2,}", b"/", path)
    decoded = unquote_to_bytes(path)
    clean = posixpath.normpath(decoded)
    if decoded.endswith(b"/") and clean != b"/":
        clean += b"/"
    return clean


def backend_unreserved_only(path: bytes) -> bytes:
    """(c) a strict RFC 3986 reader: decodes unreserved characters only, and nothing else."""
    return re.sub(rb"%(2[dDeE]|5[fF]|7[eE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA])",
                  lambda m: bytes((int(m.group(1), 16),)), path)


def backend_servlet(path: bytes) -> bytes:
    """(d) Jakarta Servlet 6.0 3.5.2: parameters removed per segment, then decoded, merged, dots."""
    path = b"/".join(s.split(b";", 1)[0] for s in path.split(b"/"))
    return backend_decode_merge_dots(path)


SAFE_BACKENDS = [backend_decode_dots_merge, backend_decode_merge_dots, backend_http_server,
                 backend_unreserved_only, backend_servlet]


# --- properties ---------------------------------------------------------------------------------------

SEGMENTS = [
    "admin", "pub", "a", "b", "c", "x", "", ".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.",
    "%61dmin", "%41dmin", "adm%69n", "%61%64%6d%69%6e", "ADMIN", "%2f", "%2F", "%5c", "%5C",
    "admin%2fx", "..%2f", "%3b", "%3B", ";x", "..;", "a;b=c", "%00", "%0a", "%20", "%7e", "%7E", "~",
    "-._~", "x%3a", "%3A", "%25", "%252e", "%252f", "%zz", "%4", "%", "\\", "%c0%af", "%C0%AE",
    "%e2%82%ac", "%C3%A9", "a.b", "...", "%2e%2e%2e", "?",
]
_escape = st.integers(0, 255).flatmap(
    lambda b: st.sampled_from([f"%{b:02x}", f"%{b:02X}", f"%{b >> 4:X}{b & 15:x}"]))
_text = st.text(alphabet="abcdefpux-._~!$&'()*+,=:@", min_size=1, max_size=5)
segment = st.one_of(st.sampled_from(SEGMENTS), _escape, _text,
                    st.lists(st.one_of(st.sampled_from(SEGMENTS), _escape), min_size=2, max_size=3)
                    .map("".join))
QUERIES = ["", "?", "?x=1", "?a=%2e%2e/../&b=//", "?p=/admin/x;%2F", "?q=\\%zz"]


@st.composite
def targets(draw, *, absolute: bool = True) -> bytes:
    segments = draw(st.lists(segment, max_size=7))
    lead = draw(st.sampled_from(["/", "/", "/", "//", "///"]))
    trail = draw(st.sampled_from(["", "", "/", "//"]))
    path = lead + "/".join(segments) + (trail if segments else "")
    query = draw(st.sampled_from(QUERIES))
    prefix = draw(st.sampled_from(["", "", "", "https://h.example", "HTTP://h:8443"])) if absolute else ""
    if "?" in path:         # a "?" in a segment starts the query
        query = ""
    return (prefix + path + query).encode("latin-1")


GLOBS = ["/admin/*", "/pub/*", "/a/b", "*", "/admin", "/admin*", "/a/*/c", "/pub", "/x/*", "/*/admin/*",
         "/ADMIN/*", "/a/b/", "/~*", "/-._~"]
rule_tables = st.lists(st.sampled_from(GLOBS), min_size=1, max_size=5, unique=True).map(
    lambda globs: RouteTable([RuleSpec(priority=i + 1, path=g, action="forward", target_group="app")
                              for i, g in enumerate(globs)]))


def rule_of(table: RouteTable, path: bytes) -> int:
    return table.match(None, path).rule


def attempt(policy: PathPolicy, target: bytes) -> bytes | None:
    try:
        return normalize_target(policy, target)
    except HTTPProtocolError as exc:
        assert exc.status == 400 and exc.reason.startswith("path_")
        return None


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(target=targets(), policy=st.sampled_from(ALL_POLICIES))
@example(target=b"/pub/../admin/x", policy=REJECT)
@example(target=b"//..//x/", policy=NO_MERGE)
def test_idempotent(target, policy):
    once = attempt(policy, target)
    if once is not None:
        assert normalize_target(policy, once) == once
        assert normalize_target(policy, once) is once       # and it takes the fast path or equal


@PROPERTY
@given(target=targets(), policy=st.sampled_from(ALL_POLICIES))
def test_output_is_origin_form_with_the_query_untouched(target, policy):
    out = attempt(policy, target)
    if out is None:
        return
    assert out[:1] == b"/"
    q = target.find(b"?")
    assert out[out.find(b"?"):] == target[q:] if q >= 0 else b"?" not in out
    path = split_path(out)
    for m in re.finditer(rb"%(..)", path):        # 6.2.2: upper-case hex, no unreserved left encoded
        assert m.group(1) == m.group(1).upper() and int(m.group(1), 16) not in b"-._~" + bytes(
            range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B))
    segments = path.split(b"/")[1:]
    assert b"." not in segments and b".." not in segments
    if policy.merge_slashes:
        assert b"//" not in path
    if policy.escaped_slashes != "keep":
        assert b";" not in path and b"%2F" not in path and b"%5C" not in path


@PROPERTY
@given(target=targets(), table=rule_tables, policy=st.sampled_from([REJECT, DECODE]))
@example(target=b"/pub/../admin/x", table=RouteTable([RuleSpec(1, path="/admin/*", target_group="a"),
                                                      RuleSpec(2, target_group="a")]), policy=REJECT)
def test_every_backend_routes_the_forwarded_path_to_the_matched_rule(target, table, policy):
    out = attempt(policy, target)
    if out is None:
        return
    path = split_path(out)              # what the connection passes to routes.match, and what goes upstream
    matched = rule_of(table, path)
    for backend in SAFE_BACKENDS:
        assert rule_of(table, backend(path)) == matched, backend.__name__


@PROPERTY
@given(target=targets(), table=rule_tables,
       policy=st.sampled_from([KEEP, NO_MERGE, PathPolicy(False, "keep"), PathPolicy(False, "decode")]))
def test_with_keep_or_merge_off_a_strict_backend_still_agrees(target, table, policy):
    # "keep" and merge_slashes = false are for backends that read %2F, ";" and "//" as data
    out = attempt(policy, target)
    if out is not None:
        path = split_path(out)
        assert rule_of(table, backend_unreserved_only(path)) == rule_of(table, path)


@PROPERTY
@given(target=targets(absolute=False), table=rule_tables)
@example(target=b"/pub//../admin/x", table=RouteTable([RuleSpec(1, path="/admin/*", target_group="a"),
                                                       RuleSpec(2, path="/pub/*", target_group="a")]))
def test_defaults_route_as_a_decoding_backend_would_route_the_original(target, table):
    # Had the client's target gone straight to a backend that decodes, merges and removes dots
    # (nginx, Go), it would have served the path this rule matched, or the gateway refused it.
    out = attempt(DEFAULT_POLICY, target)
    if out is not None:
        original = backend_decode_merge_dots(split_path(target))
        assert rule_of(table, split_path(out)) == rule_of(table, original)


@PROPERTY
@given(st.lists(st.sampled_from(["a", "b", "", ".", "..", "g;x", "c."]), max_size=8),
       st.sampled_from(["/", ""]))
def test_dot_segments_match_rfc3986_5_2_4_as_written(segments, trail):
    path = ("/" + "/".join(segments) + trail).encode()
    assert normalize_path(PathPolicy(False, "keep"), path) == rfc3986_remove_dot_segments(path)
    encoded = path.replace(b".", b"%2e")
    assert normalize_path(PathPolicy(False, "keep"), encoded) == rfc3986_remove_dot_segments(path)
    assert normalize_path(PathPolicy(True, "keep"), path) == rfc3986_remove_dot_segments(merge(path))


def test_the_oracle_itself_gives_rfc3986_5_2_4_examples():
    assert rfc3986_remove_dot_segments(b"/a/b/c/./../../g") == b"/a/g"
    assert rfc3986_remove_dot_segments(b"mid/content=5/../6") == b"mid/6"
