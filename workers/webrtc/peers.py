"""Server-side peers: one RTCPeerConnection per signalling socket, all on the process's media loop (loop.py).
aiortc is imported here at module level, i.e. when the app is built, never first inside a thread (FIELD-NOTES).

A peer may connect before its room records. While the room's current recording is `recording` (or `paused`),
each peer feeds a SegmentRecorder whose segments go through the chunk intake, exactly as uploaded chunks do.
The room's state is followed through the recordings' event channel (Redis pub/sub, so a stop reaches every web
process) with a poll as a safety net for a lost message; on stop each peer flushes its last segment as `final`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import redis
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from workers import keys
from workers.access import Principal
from workers.chunks import ChunkUpload
from workers.errors import TapedeckError, Unavailable
from workers.resources import Resources
from workers.settings import Settings
from workers.webrtc import forwarding
from workers.redis_client import for_settings
from workers.webrtc.claims import Claims, Gaps
from workers.webrtc.loop import RtcLoop, start_real_thread
from workers.webrtc.recorder import SegmentRecorder

log = logging.getLogger(__name__)

STREAM_KIND = "video"
"""Forwarded segments hold audio and video together, stored as the participant's video stream (as MediaRecorder's)."""
POLL_SECONDS = 2.0
"""How often rooms are re-read even without a pub/sub message (a message lost on a reconnect costs this much)."""
KEYFRAME_RETRY_SECONDS = 1.0
GATHER_TIMEOUT_SECONDS = 10.0
RECORDING_STATES = ("recording", "paused")
FATAL_REFUSALS = ("participant_limit", "forbidden")
"""Refusals of a segment that hold for every later one too: the peer stops recording and its client is told."""
STORE_RETRY_SECONDS = 1.0
"""While Redis or staging is away, a peer's held segments are tried again this often (from its tick)."""
MAX_HELD_BYTES = 4 * 2**20
"""Segment bytes a peer holds while they cannot be stored (about 30 s of a 1 Mbit/s camera; at most RTC_MAX_PEERS
times this per process): a Redis restart or failover costs nothing; beyond it the oldest are dropped (a hole,
reported as missing, when its sequence was already taken)."""


class SignalError(Exception):
    """A signalling problem the client is told about (code, message) before its socket closes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def has_media(sdp: str) -> bool:
    return any(line.startswith(("m=audio", "m=video")) for line in sdp.splitlines())


@dataclass(eq=False)
class PeerSession:
    """One participant's peer connection and, while its room records, its recorder."""

    manager: "PeerManager"
    principal: Principal
    pc: RTCPeerConnection
    kinds: set[str] = field(default_factory=set)
    receivers: dict = field(default_factory=dict)
    recorder: SegmentRecorder | None = None
    recording_id: str | None = None
    pending: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    closed: bool = False
    superseded: bool = False
    """A newer peer of the same participant took over: this one records nothing more."""
    claimed: bool = False
    """This peer has taken its participant over (at its first segment)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    refusal: TapedeckError | None = None
    """Set when the recording refuses this participant for good (participant_limit, forbidden): the signalling
    conversation tells the client and closes (it polls this every receive slice)."""
    head_sequence: int | None = None
    """The sequence taken for pending[0] by a store that then failed: its retry reuses it (no hole)."""
    retry_at: float = 0.0
    outage: bool = False
    storing: bool = False

    @property
    def room(self) -> str:
        return self.principal.room

    async def answer(self, sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        offered = forwarding.offered_codecs(sdp)
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind in ("audio", "video") and forwarding.prefer_forwarded_codecs(
                    transceiver, offered.get(transceiver.mid, set())):
                self.kinds.add(transceiver.kind)
                self.receivers[transceiver.kind] = transceiver.receiver
            else:  # a codec we would have to decode (H.264-only video): answered inactive, so nothing is sent
                transceiver.direction = "inactive"
        if not self.kinds:
            raise SignalError("no_media", "the offer has no VP8 video or Opus audio to record")
        answer = await self.pc.createAnswer()
        await asyncio.wait_for(self.pc.setLocalDescription(answer), GATHER_TIMEOUT_SECONDS)
        for kind, receiver in self.receivers.items():
            self.tasks.append(asyncio.ensure_future(self._consume(kind, receiver.track)))
        self.tasks.append(asyncio.ensure_future(self._tick()))
        await self.manager.sync_room(self.room)
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        if not candidate:  # end of candidates
            return
        text = candidate.split(":", 1)[1] if candidate.startswith("candidate:") else candidate
        try:
            parsed = candidate_from_sdp(text)
        except (ValueError, IndexError):
            raise SignalError("bad_message", "candidate is not an ICE candidate line") from None
        parsed.sdpMid, parsed.sdpMLineIndex = sdp_mid, sdp_mline_index
        await self.pc.addIceCandidate(parsed)

    async def _consume(self, kind: str, track) -> None:  # type: ignore[no-untyped-def]
        """Every frame is taken off the track (so nothing queues up); kept only while a recorder runs."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            recorder = self.recorder
            if recorder is not None and isinstance(frame, forwarding.EncodedFrame) and not recorder.finished:
                try:
                    recorder.add(frame, time.time())
                except Exception:  # noqa: BLE001 - one bad frame must not end the recording
                    log.exception("webrtc frame not recorded")

    async def _tick(self) -> None:
        """Cut segments on time and keep asking for a key frame until the recorder has one."""
        last_pli = 0.0
        while not self.closed:
            await asyncio.sleep(0.1)
            recorder = self.recorder
            if recorder is None:
                continue
            if recorder.waiting_for_keyframe and time.monotonic() - last_pli >= KEYFRAME_RETRY_SECONDS:
                last_pli = time.monotonic()
                await forwarding.request_keyframe(self.receivers["video"])
            if recorder.due():
                recorder.cut()
            if self.pending and time.monotonic() >= self.retry_at:
                try:
                    await self._store_pending()
                except (Unavailable, redis.RedisError) as exc:  # held; tried again in STORE_RETRY_SECONDS
                    self.retry_at = time.monotonic() + STORE_RETRY_SECONDS
                    if not self.outage:
                        log.warning("webrtc segments of %s/%s held: %s", self.room, self.principal.sub,
                                    getattr(exc, "message", type(exc).__name__))
                    self.outage = True
                except Exception:  # noqa: BLE001 - a bug of ours must not end the recording: logged, tried again
                    self.retry_at = time.monotonic() + STORE_RETRY_SECONDS
                    log.exception("webrtc segment store failed")

    def _hold(self, item: tuple) -> None:
        """A cut segment waits here until stored; bounded (MAX_HELD_BYTES, the oldest dropped; the newest stays)."""
        self.pending.append(item)
        while len(self.pending) > 1 and sum(len(held[2]) for held in self.pending) > MAX_HELD_BYTES:
            self.pending.pop(0)
            self.head_sequence = None
            log.warning("webrtc segment of %s/%s dropped: storage away too long", self.room, self.principal.sub)

    async def _store_pending(self) -> None:
        """Drain the held segments in order. One drain at a time: the tick's and a finish's (stop, close, take-over)
        would otherwise store the same head twice and drop the next (a head is popped only once stored)."""
        if self.storing:
            return  # the running drain stores what was added meanwhile too
        self.storing = True
        try:
            await self._drain()
        finally:
            self.storing = False

    async def _wait_and_store_pending(self) -> None:
        """For a finish: let a running drain end (bounded, so two peers taking each other over cannot wait on each
        other forever), then drain what is left."""
        for _ in range(100):
            if not self.storing:
                break
            await asyncio.sleep(0.05)
        await self._store_pending()

    async def _drain(self) -> None:
        if self.pending and not self.claimed:
            # Take the participant over only now, with media in hand: an older peer records until this one can.
            await self.manager.take_over(self)
            self.claimed = True
            recorder = self.recorder
            if recorder is not None and recorder.media_began is not None:
                await self.manager.resumed(self, self.pending[0][0], recorder.media_began)
        while self.pending:
            recording_id, _seq, data, final, timestamp_ms, media_ended = self.pending[0]
            stored = await self.manager.store(self, recording_id, data, final, timestamp_ms)  # raises: left held
            if stored and media_ended is not None:
                await self.manager.ended(self, recording_id, media_ended)
            self.pending.pop(0)
            self.head_sequence = None
            if self.outage:
                log.info("webrtc segments of %s/%s stored again", self.room, self.principal.sub)
                self.outage = False
            if not stored:
                self.pending.clear()
                self.superseded = True
                recorder, self.recorder, self.recording_id = self.recorder, None, None
                if recorder is not None:
                    recorder.abandon()  # nothing more of it is stored

    async def follow(self, recording_id: str | None, state: str | None) -> None:
        """Start, keep or end the recorder to match the room's current recording."""
        async with self.lock:
            if self.closed:
                return
            recording = recording_id if state in RECORDING_STATES else None
            if self.recorder is not None and self.recording_id != recording:
                await self._finish(final=True)
            if recording is not None and self.recorder is None and self.kinds and not self.superseded:
                self.recording_id = recording
                rid, made = recording, []
                self.recorder = SegmentRecorder(
                    lambda seq, data, final, ts: self._hold((rid, seq, data, final, ts, made[0].media_ended)),
                    0, "video" in self.kinds, "audio" in self.kinds, self.manager.settings.rtc.segment_seconds)
                made.append(self.recorder)

    async def _finish(self, final: bool) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.finish(final)
            try:
                await self._wait_and_store_pending()
            except (Unavailable, redis.RedisError):  # closing while storage is away: what is held is lost
                log.warning("webrtc: %d segments of %s/%s lost at close (storage away)", len(self.pending),
                            self.room, self.principal.sub)
                self.pending.clear()
                self.head_sequence = None
        self.recording_id = None

    async def close(self, final: bool = False) -> None:
        """Close the connection first, then flush (queued frames are lost otherwise: FIELD-NOTES)."""
        async with self.lock:
            if self.closed:
                return
            self.closed = True
            await self.pc.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.tasks.clear()
            await self._finish(final)
            await self.manager.release(self)


class PeerManager:
    """The process's peers; every coroutine here runs on the media loop."""

    def __init__(self, settings: Settings, on_final: Callable[[str], None] | None = None) -> None:
        forwarding.install(settings.rtc.host_addresses)
        for name in ("aiortc", "aioice"):  # their DEBUG lines (every RTP packet) drown development logs
            logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
        self.settings = settings
        self.on_final = on_final
        self.rtc = RtcLoop(settings.rtc.udp_port_min, settings.rtc.udp_port_max)
        self.io = RtcLoop()
        """Redis and staging work, on a thread of its own so a slow write (fsync, an object-store PUT) never
        stalls the media loop; one thread, so one peer's segments are stored in order."""
        self.sessions: dict[str, set[PeerSession]] = {}
        self.count = 0
        self.resources: Resources | None = None
        self.wake: asyncio.Event | None = None
        self.stopping = False
        self.io.call(self._build(), 10)
        self.rtc.call(self._start(), 10)

    # Lifecycle on the loop -------------------------------------------------

    async def _build(self) -> None:
        """On the io thread: its own Redis pool and storage client, used from that thread only (under gevent a
        socket belongs to the thread that made it)."""
        self.resources = Resources.build(self.settings)
        self.claims = Claims(self.resources.redis)
        self.gaps = Gaps(self.resources.redis)

    async def _start(self) -> None:
        self.wake = asyncio.Event()
        asyncio.ensure_future(self._watch())
        start_real_thread(self._listen)

    async def _io(self, fn, *args):  # type: ignore[no-untyped-def]
        """Runs fn(*args) on the io thread; the media loop goes on meanwhile."""
        async def call():  # type: ignore[no-untyped-def]
            return fn(*args)

        return await asyncio.wrap_future(self.io.submit(call()))

    def _listen(self) -> None:
        """State events of every recording (start, pause, stop) wake the watcher; its own thread and Redis client
        (pub/sub blocks), for the process's life."""
        loop = self.rtc.loop
        client = for_settings(self.settings, socket_timeout=30, health_check_interval=30)
        while not self.stopping:
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(keys.events_channel("*"))
                while not self.stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if message and b'"type": "state"' in message["data"]:
                        loop.call_soon_threadsafe(self.wake.set)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - Redis away: the poll still follows rooms; retry
                log.warning("webrtc pub/sub lost (%s); retrying", type(exc).__name__)
                time.sleep(2)
        client.close()

    def shutdown(self, timeout: float = 15) -> None:
        """Close every peer (each flushes what it recorded, not as final), then stop the loops and the follower."""
        self.begin_shutdown().result(timeout)

    def begin_shutdown(self) -> concurrent.futures.Future:
        """shutdown() without waiting: the future is done once every peer flushed and the loops stopped (a process
        that is exiting polls it with a real sleep, past gevent's hub)."""
        self.stopping = True
        future = self.rtc.submit(self._close_everything())

        def stop_loops(_done: concurrent.futures.Future) -> None:
            self.rtc.stop()
            self.io.stop()

        future.add_done_callback(stop_loops)
        return future

    async def _close_everything(self) -> None:
        for peers in list(self.sessions.values()):
            for session in list(peers):
                await self._close(session, final=False)

    async def _watch(self) -> None:
        while not self.stopping:
            try:
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
            self.wake.clear()  # type: ignore[union-attr]
            for room in list(self.sessions):
                try:
                    await self.sync_room(room)
                except redis.RedisError as exc:  # Redis away: peers keep what they do until it is back
                    log.warning("webrtc room sync skipped: Redis unavailable (%s)", type(exc).__name__)
                    break
                except Exception:  # noqa: BLE001 - keep following the other rooms
                    log.exception("webrtc room sync failed")

    async def sync_room(self, room: str) -> None:
        recording_id, state = await self._io(self._room_state, room)
        for session in list(self.sessions.get(room, ())):
            await session.follow(recording_id, state)

    def _room_state(self, room: str) -> tuple[str | None, str | None]:
        store = self.resources.store  # type: ignore[union-attr]
        recording_id = store.current(room)
        if recording_id is None:
            return None, None
        return recording_id, (store.get(recording_id) or {}).get("state")

    async def take_over(self, session: PeerSession) -> None:
        """The session becomes its participant's recording peer: older peers in this process flush and stop now,
        those in other processes at their next segment (their claim is gone)."""
        for other in list(self.sessions.get(session.room, ())):
            if other is not session and other.principal.sub == session.principal.sub and other.recorder is not None:
                other.superseded = True  # (its lock is not taken: two peers starting at once would wait on each other)
                await other._finish(final=False)
        await self._io(self.claims.claim, session.room, session.principal.sub, session.id)

    async def ended(self, session: PeerSession, recording_id: str, at: float) -> None:
        """The participant's stored media reaches `at`: a gap starts there unless more comes (noted per segment)."""
        try:
            await self._io(self.gaps.ended, recording_id, session.principal.sub, at)
        except Exception:  # noqa: BLE001 - a gap not listed is not worth failing the close
            log.warning("webrtc gap start of %s not noted", session.principal.sub)

    async def resumed(self, session: PeerSession, recording_id: str, at: float) -> None:
        try:
            await self._io(self.gaps.resumed, recording_id, session.principal.sub, at)
        except Exception:  # noqa: BLE001 - as above
            log.warning("webrtc gap end of %s not noted", session.principal.sub)

    async def release(self, session: PeerSession) -> None:
        try:
            await self._io(self.claims.release, session.room, session.principal.sub, session.id)
        except Exception:  # noqa: BLE001 - the claim lapses on its own
            log.warning("webrtc claim of %s/%s not released", session.room, session.principal.sub)

    async def store(self, session: PeerSession, recording_id: str, data: bytes, final: bool,
                    timestamp_ms: float) -> bool:
        """Store one segment as the stream's next chunk; False when a newer peer took the participant over.
        Redis or staging away: Unavailable or RedisError is raised and the caller holds the segment (its sequence,
        once taken, is kept in session.head_sequence for the retry, so an outage leaves no hole)."""
        principal = session.principal
        if not await self._io(self.claims.holds, principal.room, principal.sub, session.id):
            log.info("webrtc peer of %s/%s superseded by a newer one", principal.room, principal.sub)
            return False
        if session.head_sequence is None:
            session.head_sequence = await self._io(self.claims.next_sequence, recording_id, principal.sub, STREAM_KIND)
        sequence = session.head_sequence
        upload = ChunkUpload(recording_id=recording_id, participant_id=principal.sub, stream_type=STREAM_KIND,
                             sequence=sequence, data=data, timestamp=timestamp_ms, final=final)
        try:
            await self._io(self.resources.intake.accept, upload, principal)  # type: ignore[union-attr]
        except Unavailable:
            raise
        except TapedeckError as exc:
            log.warning("webrtc segment %s of %s/%s refused: %s", sequence, recording_id, principal.sub, exc.code)
            if exc.code in FATAL_REFUSALS:
                session.refusal = exc
                return False  # records nothing more
            return True
        if final and self.on_final is not None:
            self.on_final(recording_id)
        return True

    # Called from web handlers ----------------------------------------------

    def open(self, principal: Principal) -> PeerSession:
        return self.rtc.call(self._open(principal), 10)

    async def _open(self, principal: Principal) -> PeerSession:
        """The peer count lives on the loop thread only, so it needs no lock."""
        if self.count >= self.settings.rtc.max_peers:
            raise SignalError("busy", "this server holds as many peers as it may; retry later")
        servers = [RTCIceServer(**server) for server in self.settings.rtc.ice_servers]
        session = PeerSession(self, principal, RTCPeerConnection(RTCConfiguration(iceServers=servers)))
        self.sessions.setdefault(principal.room, set()).add(session)
        self.count += 1
        return session

    def close(self, session: PeerSession, final: bool = False, timeout: float = 15) -> None:
        self.rtc.call(self._close(session, final), timeout)

    async def _close(self, session: PeerSession, final: bool) -> None:
        try:
            await session.close(final)
        finally:
            peers = self.sessions.get(session.room)
            if peers is not None and session in peers:
                peers.discard(session)
                self.count -= 1
                if not peers:
                    del self.sessions[session.room]

