"""One asyncio loop per web process, in a real OS thread, where every aiortc object lives.

Under gunicorn's gevent worker `threading` is patched into greenlets; a loop in a greenlet would stall the whole
worker whenever media work runs, so the thread is started with the unpatched `start_new_thread`. Web handlers
(greenlets or threads) hand coroutines over with run_coroutine_threadsafe and wait on the future; under
patch_all that wait is cooperative (FIELD-NOTES: "aiortc under gevent"), so the web process never blocks on media.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import random
import threading
from typing import Any, Awaitable, Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def start_real_thread(target: Callable[[], None]) -> None:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        monkey = None
    if monkey is not None and monkey.is_module_patched("threading"):
        monkey.get_original("_thread", "start_new_thread")(target, ())
    else:
        threading.Thread(target=target, name="tapedeck-rtc", daemon=True).start()


class PortRangeLoop(asyncio.SelectorEventLoop):
    """Binds UDP endpoints that ask for 'any port' inside [low, high] (aioice binds port 0; firewalls want a range)."""

    def __init__(self, low: int = 0, high: int = 0) -> None:
        super().__init__()
        self.port_range = (low, high)

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None, **kwargs):  # type: ignore[override]
        low, high = self.port_range
        if not low or local_addr is None or local_addr[1] != 0:
            return await super().create_datagram_endpoint(protocol_factory, local_addr=local_addr,
                                                          remote_addr=remote_addr, **kwargs)
        ports = list(range(low, high + 1))
        random.shuffle(ports)
        for port in ports:
            try:
                return await super().create_datagram_endpoint(protocol_factory, local_addr=(local_addr[0], port),
                                                              remote_addr=remote_addr, **kwargs)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {low}-{high} (RTC_UDP_PORT_MIN/MAX)")


class RtcLoop:
    """The process's media loop; started on first use, runs until the process exits."""

    def __init__(self, port_min: int = 0, port_max: int = 0) -> None:
        self._ports = (port_min, port_max)
        self._ready = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        start_real_thread(self._run)
        self.loop = self._ready.result(10)

    def _run(self) -> None:
        loop = PortRangeLoop(*self._ports)
        asyncio.set_event_loop(loop)
        self.thread_id = threading.get_ident()
        self._ready.set_result(loop)
        try:
            loop.run_forever()
        except BaseException:  # noqa: BLE001 - the loop must not die silently
            log.exception("webrtc loop stopped")
        finally:
            loop.close()

    def call(self, coro: Awaitable[T], timeout: float) -> T:
        """Run a coroutine on the media loop and wait for it (cooperatively under gevent)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Ends the loop (its thread returns); for tests and shutdown."""
        self.loop.call_soon_threadsafe(self.loop.stop)  # type: ignore[union-attr]

    def submit(self, coro: Awaitable[Any]) -> concurrent.futures.Future:
        """Run a coroutine on the media loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
