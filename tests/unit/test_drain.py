"""A worker's drain (SIGTERM, or the old generation in a reload's roll) waits for every connection
it accepted, including one whose protocol is still being made when the drain begins."""
from __future__ import annotations

import asyncio
import time

import uvloop

from gateway import config, server, testing


def _worker(test_pki, tmp_path) -> server.Worker:
    d = test_pki.dir
    conf = config.loads(testing.toml({
        "gateway": {"access_log": "off", "connection_log": "off", "error_log": "-"},
        # port 9 is never bound here: the worker is given no sockets
        "listener": [testing.listener("web", 9, d / "server.pem", d / "server.key")],
    }))
    return server.Worker(server.build_runtime(conf), {})


class _Admitting:
    """An acceptor that has accepted one connection whose transport and protocol are not made yet."""

    def __init__(self) -> None:
        self.active = 1
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_drain_waits_for_a_connection_still_being_admitted(test_pki, tmp_path):
    worker = _worker(test_pki, tmp_path)
    acceptor = _Admitting()
    worker.servers.append(acceptor)
    order = []

    async def main():
        async def admitted_then_done():
            await asyncio.sleep(0.2)            # the protocol is made, serves, and ends
            order.append("connection done")
            acceptor.active = 0
        task = asyncio.ensure_future(admitted_then_done())
        await worker.drain(timeout_s=10)
        order.append("drained")
        await task

    uvloop.run(main())
    assert acceptor.closed
    assert order == ["connection done", "drained"]


def test_drain_still_ends_at_its_deadline(test_pki, tmp_path):
    worker = _worker(test_pki, tmp_path)
    worker.servers.append(_Admitting())         # never completes

    async def main():
        # the drain's own clock (uvloop's loop.time() is libuv's, in whole milliseconds, and can
        # read a hair under the deadline the drain waited for on time.monotonic())
        started = time.monotonic()
        await worker.drain(timeout_s=0.3)
        return time.monotonic() - started

    assert 0.3 <= uvloop.run(main()) < 5
