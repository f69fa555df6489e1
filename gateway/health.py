"""Which targets of a group take traffic: active health checks and passive ejection.

How this works: every target group (gateway.upstream.TargetGroup) has one `Health`, which owns the
health state of its targets (the `healthy`, `passes`, `fails`, `failures` and `ejected` fields of
each `Target`, and the timers and probe tasks behind them) and tells the group when the set of
available targets changed (`group.recompute()`), so the group's `pick()` only ever reads a tuple.

- Active checks (a group's `health_check`): each target is probed on its own schedule (`GET path`
  on a new connection each time, `Connection: close`, the response read up to its status line by
  the same strict reader as every response); `unhealthy_threshold` failures in a row take it
  out, `healthy_threshold` passes bring it back. The first probe runs at start and decides at
  once, so a target that is down at start is out within `timeout_s` (ALB's thresholds, 2 to 10).
- Passive ejection: the group's `connect()` and the connection core report connection failures
  (refused, reset, TLS failure, closed before answering); at `ejection_failures` in a row the
  target is out for `ejection_duration_s`, or until a health check passes. A success resets the
  run. This is Envoy's outlier detection on consecutive gateway failures.

Every change of state is one line in the error log naming the group, the target and the reason
(`target_unhealthy`, `target_healthy`, `target_ejected`, `target_returned`), and is reported to the
worker's observer for the `/metrics` upstream gauges.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import UpstreamError
from .http1 import Response, response_reader
from .metrics import NULL_OBSERVER

if TYPE_CHECKING:
    from .spec import HealthCheckSpec
    from .upstream import Target

__all__ = ["Health", "HEALTH_CHECK_USER_AGENT", "os_error"]

HEALTH_CHECK_USER_AGENT = b"mtls-gateway-health-check"


class Health:
    """The health of one group's targets. `changed` is called when the available set may have
    changed; `log(level, reason, message, target, **fields)` writes one error-log line."""

    def __init__(self, group_name: str, targets: tuple[Target, ...], check: HealthCheckSpec | None,
                 *, ejection_failures: int, ejection_duration_s: float,
                 ssl_context: ssl.SSLContext | None, changed: Callable[[], None],
                 log: Callable[..., None]) -> None:
        self.group_name = group_name
        self.targets = targets
        self.check = check
        self.ejection_failures = ejection_failures
        self.ejection_duration_s = ejection_duration_s
        self.ssl = ssl_context
        self.observer: Any = NULL_OBSERVER
        self._changed = changed
        self._log = log
        self._request = b""
        if check is not None:
            self._request = (
                b"GET %s HTTP/1.1\r\nHost: %%s\r\nUser-Agent: %s\r\nAccept: */*\r\n"
                b"Connection: close\r\n\r\n" % (check.path.encode("ascii"), HEALTH_CHECK_USER_AGENT))

    # -- life --------------------------------------------------------------------------------------

    def start(self, observer: Any = None) -> None:
        """Called once in each worker when its loop runs: the active checks start here."""
        if observer is not None:
            self.observer = observer
        if self.check is None:
            return
        loop = asyncio.get_running_loop()
        for target in self.targets:
            if target._probe_task is None:
                target._probe_task = loop.create_task(self._probe_loop(target))

    def close(self) -> None:
        for target in self.targets:
            if target._probe_task is not None:
                target._probe_task.cancel()
                target._probe_task = None
            if target._uneject is not None:
                target._uneject.cancel()
                target._uneject = None

    # -- passive ejection --------------------------------------------------------------------------

    def connection_failed(self, target: Target, reason: str) -> None:
        """A connection to `target` failed (refused, reset, TLS, closed before answering)."""
        target.failures += 1
        limit = self.ejection_failures
        if limit and target.failures >= limit and not target.ejected:
            target.ejected = True
            self._changed()
            self._log("warning", "target_ejected",
                      f"target {target.label} of group {self.group_name} taken out of rotation for "
                      f"{self.ejection_duration_s:g}s after {target.failures} connection failures "
                      f"in a row (last: {reason})", target, detail=reason)
            self.observer.upstream(self.group_name, target.label, 0.0, False)
            target._uneject = asyncio.get_running_loop().call_later(
                self.ejection_duration_s, self._return, target, "ejection_ended")

    def connection_ok(self, target: Target) -> None:
        target.failures = 0

    def _return(self, target: Target, why: str) -> None:
        if target._uneject is not None:
            target._uneject.cancel()
            target._uneject = None
        if not target.ejected:
            return
        target.ejected = False
        target.failures = 0
        self._changed()
        self._log("info", "target_returned", f"target {target.label} of group {self.group_name} "
                  f"back in rotation ({why.replace('_', ' ')})", target)

    # -- active health checks ----------------------------------------------------------------------

    async def _probe_loop(self, target: Target) -> None:
        hc = self.check
        assert hc is not None       # started only with a check configured
        loop = asyncio.get_running_loop()
        first = True
        while True:
            started = loop.time()
            ok, detail = await self.probe(target)
            self.result(target, ok, detail, first, loop.time() - started)
            first = False
            await asyncio.sleep(max(0.0, hc.interval_s - (loop.time() - started)))

    async def probe(self, target: Target) -> tuple[bool, str]:
        """One health check of `target`: (passed, what was seen)."""
        hc = self.check
        assert hc is not None
        loop = asyncio.get_running_loop()
        host = target.server_hostname or target.label
        request = self._request % host.encode("ascii")
        waiter: asyncio.Future[int] = loop.create_future()
        transport = None
        try:
            async with asyncio.timeout(hc.timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: _Probe(request, waiter), target.host, target.port, ssl=self.ssl,
                    server_hostname=target.server_hostname)
                status = await waiter
        except TimeoutError:
            return False, f"no answer within {hc.timeout_s:g}s"
        except UpstreamError as exc:
            return False, str(exc)
        except OSError as exc:
            return False, os_error(exc)
        finally:
            if transport is not None:
                transport.close()
        for lo, hi in hc.matcher:
            if lo <= status <= hi:
                return True, f"status {status}"
        return False, f"status {status} does not match {_matcher_text(hc.matcher)}"

    def result(self, target: Target, ok: bool, detail: str, first: bool, latency_s: float) -> None:
        """What one health check of `target` saw; `first`: the check at start, which decides."""
        hc = self.check
        assert hc is not None
        if ok:
            target.fails = 0
            if target.ejected:
                self._return(target, "health_check_passed")
            if target.healthy:
                return
            target.passes += 1
            if target.passes < hc.healthy_threshold and not first:
                return
            target.passes = 0
            target.healthy = True
            self._changed()
            self._log("info", "target_healthy", f"target {target.label} of group {self.group_name} "
                      f"is healthy ({detail})", target, detail=detail)
            self.observer.upstream(self.group_name, target.label, latency_s, True)
            return
        target.passes = 0
        if not target.healthy:
            return
        target.fails += 1
        if target.fails < hc.unhealthy_threshold and not first:
            return
        target.fails = 0
        target.healthy = False
        self._changed()
        self._log("warning", "target_unhealthy", f"target {target.label} of group "
                  f"{self.group_name} failed its health check: {detail}", target, detail=detail)
        self.observer.upstream(self.group_name, target.label, latency_s, False)


class _Probe(asyncio.Protocol):
    """A health-check exchange: send the request, read up to the status of the response."""

    def __init__(self, request: bytes, waiter: asyncio.Future[int]) -> None:
        self.request = request
        self.waiter = waiter
        self.reader = response_reader()
        self.reader.expect(b"GET")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)       # type: ignore[attr-defined]  # a stream transport

    def data_received(self, data: bytes) -> None:
        if self.waiter.done():
            return
        try:
            self.reader.feed(data)
            event = self.reader.next_event()
        except UpstreamError as exc:
            self.waiter.set_exception(exc)
            return
        if type(event) is Response:
            self.waiter.set_result(event.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(UpstreamError("closed the connection before answering",
                                                    reason="upstream_closed"))


def os_error(exc: OSError) -> str:
    """An OSError (a TLS one included) as the few words a log line gives it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _matcher_text(matcher: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in matcher)
