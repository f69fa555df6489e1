"""`mtls-gateway run | check | demo | pki | revoke`: the command line, and the only place that exits.

Exit codes: 0 success; 1 a check or the gateway failed at run time; 2 the configuration (or the
command line) is invalid, with every problem printed, one per line, as `file: key.path: message`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, GatewayError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtls-gateway",
                                description="mTLS edge gateway: authenticates clients by X.509 certificate")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the gateway")
    run.add_argument("--config", "-c", required=True, type=Path)
    check = sub.add_parser("check", help="validate a configuration without starting")
    check.add_argument("--config", "-c", required=True, type=Path)
    demo = sub.add_parser("demo", help="throwaway PKI, two listeners, the four ALB walkthrough checks")
    demo.add_argument("--once", action="store_true", help="run the checks and exit (non-zero if any fails)")
    demo.add_argument("--verify-port", type=int, default=8443)
    demo.add_argument("--passthrough-port", type=int, default=8444)
    pki = sub.add_parser("pki", help="a development PKI: CA, intermediate, server and client certificates, CRL")
    psub = pki.add_subparsers(dest="pki_command", required=True)
    init = psub.add_parser("init", help="create a root CA, intermediate, server and client1 certificates, CRLs")
    init.add_argument("directory", type=Path)
    init.add_argument("--force", action="store_true", help="replace an existing PKI in DIR")
    init.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    init.add_argument("--server-name", action="append", dest="server_names",
                      help="DNS name or IP for the server certificate (repeatable)")
    issue = psub.add_parser("issue-client", help="issue a client certificate signed by the intermediate")
    issue.add_argument("directory", type=Path)
    issue.add_argument("name")
    issue.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    revoke = psub.add_parser("revoke", help="revoke a client certificate (re-signs the intermediate's CRL)")
    revoke.add_argument("directory", type=Path)
    revoke.add_argument("name")
    live = sub.add_parser("revoke", help="revoke a client certificate in a running gateway, at once "
                                         "(the admin API's /revocations)")
    live.add_argument("--admin", required=True, help="the admin listener's URL, e.g. http://127.0.0.1:9901")
    live.add_argument("--token-file", required=True, type=Path, help="the file [admin] token_file names")
    live.add_argument("--reason", default="", help="why, for the audit line and the listing")
    live.add_argument("--undo", action="store_true", help="withdraw the revocation instead")
    live.add_argument("trust_store", help="the [trust_store.NAME] whose clients it concerns")
    live.add_argument("serial", help="the certificate's serial in hex (colons allowed)")
    return p


def _revoke(args: argparse.Namespace) -> int:
    """POST (or DELETE) one revocation to a running gateway's admin listener; the answer printed."""
    import http.client
    import json
    from urllib.parse import quote, urlsplit
    url = urlsplit(args.admin)
    if url.scheme != "http" or not url.hostname:
        print(f"error: --admin must be an http://host:port URL, got {args.admin!r}", file=sys.stderr)
        return EXIT_CONFIG
    token = args.token_file.read_bytes().strip().decode("ascii", "replace")
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    if args.undo:
        conn.request("DELETE", f"/revocations/{quote(args.trust_store, safe='')}/"
                               f"{quote(args.serial, safe='')}", headers=headers)
    else:
        body = json.dumps({"trust_store": args.trust_store, "serial": args.serial,
                           "reason": args.reason})
        headers["Content-Type"] = "application/json"
        conn.request("POST", "/revocations", body=body, headers=headers)
    answer = conn.getresponse()
    text = answer.read().decode("utf-8", "replace")
    print(text)
    if answer.status >= 400:
        print(f"error: HTTP {answer.status}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _print_problems(exc: ConfigError) -> None:
    print(f"configuration invalid: {len(exc.problems)} problem(s)", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            from . import config
            from .server import build_runtime
            conf = config.load(args.config)
            build_runtime(conf)     # TLS contexts and trust stores too: what `run` would build
            print(f"{args.config}: OK ({len(conf.listeners)} listener(s))")
            return EXIT_OK
        if args.command == "run":
            from . import config
            from .server import serve
            return serve(config.load(args.config), config_path=args.config)
        if args.command == "demo":
            from .demo import main as demo_main
            return demo_main(args.once, args.verify_port, args.passthrough_port)
        if args.command == "revoke":
            return _revoke(args)
        if args.command == "pki":
            from . import pki
            if args.pki_command == "init":
                kw = {"server_names": tuple(args.server_names)} if args.server_names else {}
                written = pki.init_dir(args.directory, force=args.force, key_type=args.key_type, **kw)
            elif args.pki_command == "issue-client":
                written = pki.issue_client(args.directory, args.name, key_type=args.key_type)
            else:
                written = pki.revoke(args.directory, args.name)
            for path in written:
                print(path)
            if args.pki_command == "init":
                print("\nA configuration using these files:\n")
                print(pki.config_snippet(args.directory))
            return EXIT_OK
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG if args.command in ("check", "run") else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED
