"""gateway.routes: rule conditions, prebuilt fixed responses, redirects with ALB's placeholders,
client-certificate requirements. No sockets."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway import config
from gateway.config import ClientAllow, FixedResponse, Redirect, RuleSpec
from gateway.identity import Identity, VerifyStatus
from gateway.routes import (FORBIDDEN_NOT_ALLOWED, FORBIDDEN_NO_CERT, NO_RULE, Access, Fixed,
                            Forward, RedirectAction, RouteTable, encode_fixed, split_host,
                            split_path)


def fwd(priority: int = 1, **kw) -> RuleSpec:
    return RuleSpec(priority=priority, action="forward", target_group=kw.pop("group", "app"), **kw)


def fixed(priority: int, body: str, **kw) -> RuleSpec:
    return RuleSpec(priority=priority, action="fixed-response",
                    fixed_response=FixedResponse(200, "text/plain", body.encode()), **kw)


def identity(subject="CN=alice,O=Example", issuer="CN=Example CA,O=Example",
             san_dns=("alice.example.com",), san_uri=("spiffe://example.com/ns/prod/alice",),
             status=VerifyStatus.SUCCESS) -> Identity:
    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return Identity("00", 1, subject, issuer, t, t, tuple(san_dns), tuple(san_uri), (b"",), status)


# --- matching ---------------------------------------------------------------------------------------

def test_first_matching_rule_wins_in_the_given_order():
    table = RouteTable([fixed(1, "a", path="/a/*"), fixed(2, "b", path="/a/b"), fixed(3, "c")])
    assert table.match(b"x", b"/a/b").keep_alive.endswith(b"a")
    assert table.match(b"x", b"/zzz").keep_alive.endswith(b"c")


def test_host_exact_and_wildcard_case_insensitive():
    table = RouteTable([fixed(1, "exact", host="api.example.com"),
                        fixed(2, "wild", host="*.example.com")])
    assert table.match(b"API.Example.COM", b"/").keep_alive.endswith(b"exact")
    assert table.match(b"www.example.com", b"/").keep_alive.endswith(b"wild")
    assert table.match(b"a.b.example.com", b"/").keep_alive.endswith(b"wild")
    assert table.match(b"example.com", b"/") is NO_RULE
    assert table.match(None, b"/") is NO_RULE


def test_path_is_case_sensitive_and_star_means_anything():
    table = RouteTable([fixed(1, "api", path="/api/*"), fixed(2, "star", path="*")])
    assert table.match(None, b"/api/v1").keep_alive.endswith(b"api")
    assert table.match(None, b"/API/v1").keep_alive.endswith(b"star")


def test_methods_condition():
    table = RouteTable([fixed(1, "read", methods=("GET", "HEAD")), fixed(2, "other")])
    assert table.match(None, b"/", b"HEAD").keep_alive.endswith(b"read")
    assert table.match(None, b"/", b"POST").keep_alive.endswith(b"other")
    assert table.match(None, b"/", b"get").keep_alive.endswith(b"other")     # methods are case-sensitive


def test_header_conditions_all_names_any_value():
    rule = fixed(1, "hit", headers=(("x-env", ("prod", "stag*")), ("x-team", ("a",))))
    table = RouteTable([rule])
    both = [(b"X-Env", b"dev"), (b"x-env", b"Staging"), (b"X-TEAM", b"A")]
    assert table.match(None, b"/", b"GET", both) is not NO_RULE
    assert table.match(None, b"/", b"GET", both[:2]) is NO_RULE                # x-team missing
    assert table.match(None, b"/", b"GET", [(b"X-Env", b"dev"), (b"X-Team", b"a")]) is NO_RULE
    assert table.match(None, b"/", b"GET", [(b"X-Env", b"production"), (b"X-Team", b"a")]) is NO_RULE


def test_what_a_decision_can_depend_on():
    """`unconditional`: what match returns whatever the request, when the first rule has no
    condition; `reads_headers`: some rule has a header condition (the native core remembers
    decisions by host, path and method only when none has)."""
    catch_all = RouteTable([fixed(1, "a"), fixed(2, "b", path="/b")])
    assert catch_all.unconditional is catch_all.match(None, b"/b", b"POST", [(b"x", b"y")])
    assert not catch_all.reads_headers
    for first in (fixed(1, "a", path="/a"), fixed(1, "a", host="h.example"),
                  fixed(1, "a", methods=("GET",)), fixed(1, "a", headers=(("x", ("y",)),))):
        assert RouteTable([first, fixed(2, "b")]).unconditional is None
    assert RouteTable([fixed(1, "a"), fixed(2, "b", headers=(("x", ("y",)),))]).reads_headers
    assert RouteTable([]).unconditional is None and not RouteTable([]).reads_headers


def test_decide_is_match_remembered_only_when_headers_cannot_matter():
    """`decide` (what HTTP/2 streams route with) gives what `match` gives, request by request; it
    remembers decisions by host, path and method only when no rule reads a header, keeps at most
    MEMO_MAX of them and none for a long host and path."""
    from gateway import routes
    rules = [fixed(1, "api", path="/api/*", methods=("GET",)), fixed(2, "h", host="*.example.com"),
             fixed(3, "rest")]
    table = RouteTable(rules)
    requests = [(b"a.example.com", b"/api/x", b"GET"), (None, b"/api/x", b"POST"), (None, b"/api/x", b"GET"),
                (b"b.example.com", b"/", b"PUT"), (None, b"/", b"GET"), (b"x", b"/api/", b"GET")]
    for _ in range(2):
        for host, path, method in requests:
            assert table.decide(host, path, method, ()) is table.match(host, path, method)
    assert len(table._memo) == len(requests)
    long_path = b"/" + b"x" * routes.MEMO_KEY_MAX
    assert table.decide(None, long_path, b"GET", ()) is table.match(None, long_path)
    assert len(table._memo) == len(requests)
    for i in range(routes.MEMO_MAX + 10):
        table.decide(None, b"/p%d" % i, b"GET", ())
    assert len(table._memo) <= routes.MEMO_MAX
    # a header condition: every decision is taken afresh, with the request's headers
    reading = RouteTable([fixed(1, "hit", headers=(("x-env", ("prod",)),)), fixed(2, "miss")])
    assert reading.decide(None, b"/", b"GET", [(b"X-Env", b"prod")]).keep_alive.endswith(b"hit")
    assert reading.decide(None, b"/", b"GET", [(b"X-Env", b"dev")]).keep_alive.endswith(b"miss")
    assert reading._memo is None


def test_forward_carries_group_rule_and_upgrades():
    table = RouteTable([fwd(1, path="/ws", allow_upgrade=("websocket",)), fwd(2, group="web")])
    ws = table.match(None, b"/ws")
    assert ws == Forward("app", 0, frozenset({b"websocket"}), None)
    assert table.match(None, b"/x") == Forward("web", 1)
    assert table.upgrades is True
    assert RouteTable([fwd(1)]).upgrades is False


# --- fixed responses ---------------------------------------------------------------------------------

def test_fixed_responses_are_prebuilt_in_three_forms():
    f = encode_fixed(503, "application/json", b'{"down":true}', 4)
    head = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: 13\r\n")
    assert f.keep_alive == head + b"\r\n" + b'{"down":true}'
    assert f.closing == head + b"Connection: close\r\n\r\n" + b'{"down":true}'
    assert f.head_only == head + b"\r\n"
    assert f.rule == 4 and f.access is None


# --- client-certificate requirements -----------------------------------------------------------------

def test_require_client_cert_without_lists():
    access = Access()
    assert access.refusal(identity()) is None
    assert access.refusal(None) is FORBIDDEN_NO_CERT
    assert access.refusal(identity(status=VerifyStatus.NOT_VERIFIED)) is FORBIDDEN_NO_CERT
    assert FORBIDDEN_NO_CERT.status == FORBIDDEN_NOT_ALLOWED.status == 403
    assert b"requires a verified client certificate" in FORBIDDEN_NO_CERT.keep_alive
    assert b"not allowed on this path" in FORBIDDEN_NOT_ALLOWED.keep_alive


@pytest.mark.parametrize("allow,ok", [
    (ClientAllow(subject=("CN=alice,O=Example",)), True),
    (ClientAllow(subject=("CN=bob,O=Example", "CN=alice,O=Example")), True),
    (ClientAllow(subject=("CN=*,O=Example",)), True),
    (ClientAllow(subject=("CN=alice",)), False),             # whole subject, not a prefix
    (ClientAllow(subject=("CN=*",)), False),                 # `*` never crosses a ','
    (ClientAllow(subject=("cn=alice,o=example",)), False),   # exact case
    (ClientAllow(issuer=("CN=Example CA,O=Example",)), True),
    (ClientAllow(issuer=("CN=Other CA,O=Example",)), False),
    (ClientAllow(san_dns=("*.example.com",)), True),
    (ClientAllow(san_dns=("*.EXAMPLE.com",)), True),
    (ClientAllow(san_dns=("*.com",)), False),                # `*` is one label
    (ClientAllow(san_uri=("spiffe://example.com/ns/prod/*",)), True),
    (ClientAllow(san_uri=("spiffe://example.com/*",)), True),
    (ClientAllow(san_uri=("spiffe://example.com/ns/dev/*",)), False),
    (ClientAllow(subject=("CN=alice,O=Example",), san_uri=("spiffe://other/*",)), False),  # all lists
])
def test_allow_lists(allow, ok):
    refusal = Access(allow).refusal(identity())
    assert (refusal is None) is ok
    if not ok:
        assert refusal is FORBIDDEN_NOT_ALLOWED


def test_allow_lists_need_a_matching_san_when_the_identity_has_none():
    access = Access(ClientAllow(san_dns=("*.example.com",)))
    assert access.refusal(identity(san_dns=())) is FORBIDDEN_NOT_ALLOWED


def test_access_is_attached_to_every_kind_of_action():
    allow = ClientAllow(subject=("CN=x",))
    table = RouteTable([
        fwd(1, path="/f", allow=allow, require_client_cert=True),
        fixed(2, "x", path="/x", require_client_cert=True),
        RuleSpec(priority=3, path="/r", action="redirect", redirect=Redirect(host="a.example"),
                 require_client_cert=True),
        fixed(4, "open"),
    ])
    for path in (b"/f", b"/x", b"/r"):
        assert isinstance(table.match(None, path).access, Access)
    assert table.match(None, b"/open").access is None


# --- redirects ----------------------------------------------------------------------------------------

def redirect(**kw) -> RedirectAction:
    return RedirectAction(Redirect(**kw), 0)


@pytest.mark.parametrize("spec,host,target,location", [
    (dict(host="new.example.com"), b"old.example.com", b"/a/b?x=1",
     b"https://new.example.com:8443/a/b?x=1"),
    (dict(host="www.#{host}", path="/v2/#{path}", query="#{query}&from=v1"), b"example.com",
     b"/v1/items?id=3", b"https://www.example.com:8443/v2/v1/items?id=3&from=v1"),
    (dict(scheme="http", port="80", query=""), b"h", b"/p?drop=1", b"http://h/p"),
    (dict(port="443"), b"h", b"/p", b"https://h/p"),                       # default port left out
    (dict(path="/fixed"), b"h", b"/", b"https://h:8443/fixed"),
    (dict(query="a=1"), b"h", b"/p", b"https://h:8443/p?a=1"),
    (dict(path="/#{host}/#{port}/#{path}", scheme="#{scheme}"), b"h", b"/p",
     b"https://h:8443/h/8443/p"),
    (dict(host="x.example"), b"h", b"https://h/abs/path?q=1", b"https://x.example:8443/abs/path?q=1"),
])
def test_redirect_locations(spec, host, target, location):
    assert redirect(**spec).location(host, 8443, target) == location


def test_redirect_needs_a_host_only_if_it_uses_one():
    assert redirect(path="/x").location(None, 8443, b"/") is None
    assert redirect(host="fixed.example", path="/x").location(None, 443, b"/") == b"https://fixed.example/x"


def test_redirect_response():
    r = redirect(status=308, host="x")
    assert r.response(b"https://x/", True) == (b"HTTP/1.1 308 Permanent Redirect\r\nLocation: "
                                                 b"https://x/\r\nContent-Length: 0\r\n\r\n")
    assert r.response(b"https://x/", False).endswith(b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def test_every_redirect_status_has_a_reason_phrase():
    for status in config.REDIRECT_STATUSES:
        assert b" Status\r\n" not in redirect(status=status, host="x").response(b"/", True)


# --- request-target helpers --------------------------------------------------------------------------

@pytest.mark.parametrize("target,path", [
    (b"/a/b?c=d", b"/a/b"), (b"/", b"/"), (b"*", b"*"), (b"/a?", b"/a"),
    (b"https://h:1/x/y?z", b"/x/y"), (b"http://h", b"/"), (b"http://h?q=1", b"/"),
])
def test_split_path(target, path):
    assert split_path(target) == path


@pytest.mark.parametrize("host,bare", [
    (b"a.example:8443", b"a.example"), (b"a.example", b"a.example"), (b"[::1]:443", b"[::1]"),
    (b"[::1]", b"[::1]"), (b"", None), (None, None),
])
def test_split_host(host, bare):
    assert split_host(host) == bare


def test_rule_specs_from_config_compile(tmp_path):
    """What config produces, RouteTable takes: a loaded listener's rules compile."""
    from gateway.config import loads
    text = """
[[listener]]
name = "l"
bind = "127.0.0.1:8443"
certificates = [{cert = "s.pem", key = "s.key"}]
[[listener.rule]]
methods = ["GET"]
headers = {"X-A" = "b*"}
action = "redirect"
redirect = {host = "x.example"}
"""
    with pytest.raises(config.ConfigError) as info:     # the files are missing, the rules are fine
        loads(text, base_dir=tmp_path)
    assert all("rule" not in p.key for p in info.value.problems)
    table = RouteTable([RuleSpec(priority=1, methods=("GET",), headers=(("x-a", ("b*",)),),
                                 action="redirect", redirect=Redirect(host="x.example"))])
    assert isinstance(table.match(None, b"/", b"GET", [(b"X-A", b"bee")]), RedirectAction)
    assert isinstance(table.match(None, b"/", b"GET", []), Fixed)      # NO_RULE


def test_a_header_condition_without_patterns_matches_no_value():
    # config refuses an empty pattern list; a table built from one anyway fails closed (no value
    # matches, so the rule does not apply) instead of raising on the first request with the header
    table = RouteTable([fixed(1, "a", headers=(("x-a", ()),)), fixed(2, "b")])
    assert table.match(None, b"/", b"GET", [(b"X-A", b"")]).keep_alive.endswith(b"b")
    assert table.match(None, b"/", b"GET", []).keep_alive.endswith(b"b")
