"""WebRTC ingest while Redis is away (DESIGN §4: a dependency down → `unavailable`), against the Procfile's real `web`
on a private Redis that the test stops and starts again (append-only, so what it acknowledged survives):
- a socket opened during the outage gets `unavailable` and close 4503, never a traceback;
- a peer recording through the outage keeps its socket, and the segments cut meanwhile are stored once Redis is back
  (held, in order, not dropped): the stream has no hole and covers the whole call."""
from __future__ import annotations

import asyncio
import signal
import time

import pytest

from app.auth import mint_token
from tests.conftest import JWT_SECRET
from tests.procfile import minimal_env, start_web, stop_web, wait_web
from tests.services import RedisServer, free_port
from tests.test_webrtc_recording import Peer, host, live_web
from tests.test_webrtc_signal import Client, assert_refused

pytestmark = pytest.mark.timeout(180)
OUTAGE_SECONDS = 4.0
"""Longer than the store's own retries (0.5 + 1 + 1.5 s), so the held segments are what carries the call over."""


def test_a_peer_records_through_a_redis_outage_and_new_sockets_are_told_unavailable(stack_env, tmp_path, room) -> None:
    import redis

    from workers import keys

    private = RedisServer(tmp_path / "redis", appendonly=True)
    port = free_port()
    env = minimal_env(tmp_path, **{**stack_env, "REDIS_URL": private.url}, PORT=str(port), WEB_CONCURRENCY="1")
    web = start_web(env, tmp_path / "web.log")
    try:
        wait_web(web, port, tmp_path / "web.log")
        server = live_web(port)

        async def scenario() -> tuple[str, float]:
            started = host(server, room, "start")
            peer = Peer(port, room, mint_token(JWT_SECRET, room, "lena", "participant"))
            await peer.connect()
            began = time.monotonic()
            await asyncio.sleep(2.5)
            private.stop()
            late = await asyncio.to_thread(
                Client.connect, f"ws://127.0.0.1:{port}/video-calls/{room}/signal?token="
                                f"{mint_token(JWT_SECRET, room, 'mia', 'participant')}")
            await asyncio.to_thread(assert_refused, late, "unavailable", 4503)
            await asyncio.sleep(OUTAGE_SECONDS)
            private.restart()
            await asyncio.sleep(3)
            assert peer.ws.connected, "the peer's socket was closed by the outage"
            host(server, room, "stop")
            sent = time.monotonic() - began  # recorded from here back to the first segment
            await asyncio.sleep(1.5)
            await peer.bye()
            return started["recordingId"], sent

        recording_id, sent = asyncio.run(scenario())
    finally:
        stop_web(web, (signal.SIGTERM, signal.SIGKILL), wait=30)
        private.stop()
    client = redis.Redis(port=private.port)
    private.restart()
    try:
        stats = {k.decode(): v.decode() for k, v in
                 client.hgetall(keys.stream_stats(recording_id, "lena", "video")).items()}
    finally:
        client.close()
        private.stop()
    chunks = int(stats["chunks"])
    assert chunks == int(stats["max"]) + 1, stats  # no hole: every segment cut during the outage was stored
    assert chunks >= sent - 2.5, (chunks, sent)  # 1 s segments over the whole call, the outage included
    assert "Traceback" not in (tmp_path / "web.log").read_text(errors="replace")


def test_held_segments_are_bounded_by_bytes_the_oldest_dropped() -> None:
    """While storage is away a peer holds at most MAX_HELD_BYTES of segments (RTC_MAX_PEERS of them per process):
    the oldest go first, and a dropped head's taken sequence is given up (reported missing, not reused)."""
    from workers.access import Principal
    from workers.webrtc.peers import MAX_HELD_BYTES, PeerSession

    session = PeerSession(manager=None, principal=Principal("nina", "room", "participant"), pc=None)  # type: ignore[arg-type]
    piece = MAX_HELD_BYTES // 4
    session._hold(("rec", 0, b"a" * piece, False, 0.0, None))
    session.head_sequence = 7  # a store of the head took sequence 7, then failed
    for n in range(1, 6):
        session._hold(("rec", n, bytes([97 + n]) * piece, False, 0.0, None))
    assert [held[1] for held in session.pending] == [2, 3, 4, 5]
    assert sum(len(held[2]) for held in session.pending) <= MAX_HELD_BYTES
    assert session.head_sequence is None
    session._hold(("rec", 6, b"z" * (MAX_HELD_BYTES + 1), True, 0.0, None))  # one larger than the bound still goes
    assert [held[1] for held in session.pending] == [6]


def test_two_drains_at_once_store_each_held_segment_once_in_order() -> None:
    """The tick drains held segments while a stop's or a close's finish drains them too (same media loop): each
    segment is stored once, in order, with no sequence taken and left unused (a hole)."""
    from workers.access import Principal
    from workers.webrtc.peers import PeerSession

    class Manager:
        def __init__(self) -> None:
            self.stored: list[int] = []

        async def take_over(self, session) -> None:  # noqa: ANN001
            await asyncio.sleep(0.01)

        async def resumed(self, *args) -> None:  # noqa: ANN002
            pass

        async def ended(self, *args) -> None:  # noqa: ANN002
            pass

        async def store(self, session, recording_id, data, final, timestamp_ms) -> bool:  # noqa: ANN001
            await asyncio.sleep(0.01)  # the io thread's round trip
            self.stored.append(data[0])
            return True

    async def scenario() -> list[int]:
        manager = Manager()
        session = PeerSession(manager=manager, principal=Principal("omar", "room", "participant"), pc=None)  # type: ignore[arg-type]
        for n in range(6):
            session._hold(("rec", n, bytes([n]), n == 5, 0.0, None))
        await asyncio.gather(session._store_pending(), session._wait_and_store_pending(), session._store_pending())
        assert session.pending == [] and not session.storing
        return manager.stored

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4, 5]
