"""WebRTC ingest end to end against the Procfile's real `web`: a pure-Python aiortc client sends synthetic audio and
video over loopback, the host starts and stops over HTTP, the real Celery worker finalizes, and the output is decoded
with PyAV. Also: a reconnect within one recording, a second offer, and 50 connect/disconnect cycles that leave the
web worker's descriptors, threads and memory flat."""
from __future__ import annotations

import asyncio
import fractions
import json
import os
import time
from pathlib import Path

import aioice.ice
import av
import psutil
import pytest
from aiortc import (AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription,
                    VideoStreamTrack)
from simple_websocket import ConnectionClosed

from app.auth import mint_token
from tests.conftest import JWT_SECRET
from tests.test_webrtc_signal import Client

pytestmark = pytest.mark.timeout(300)

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only, as the server
WIDTH, HEIGHT = 640, 480


class ColorBars(VideoStreamTrack):
    """640x480 frames whose brightness changes every frame (so every frame is real content)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        luma = bytes([(self.count * 7) % 200 + 16])
        frame.planes[0].update(luma * frame.planes[0].buffer_size)
        for plane in frame.planes[1:]:
            plane.update(b"\x80" * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class Peer:
    """One participant: an aiortc peer connection signalled over the server's WebSocket."""

    def __init__(self, port: int, room: str, token: str) -> None:
        self.ws = Client.connect(f"ws://127.0.0.1:{port}/video-calls/{room}/signal?token={token}")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def connect(self, video: bool = True, audio: bool = True, video_codec: str = "video/VP8") -> None:
        if video:
            self.pc.addTrack(ColorBars())
            caps = RTCRtpSender.getCapabilities("video")
            self.pc.getTransceivers()[-1].setCodecPreferences([c for c in caps.codecs if c.mimeType == video_codec])
        if audio:
            self.pc.addTrack(AudioStreamTrack())  # 48 kHz silence, Opus-encoded by aiortc
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp}))
        reply = json.loads(await asyncio.to_thread(self.ws.receive, 30))
        assert reply["type"] == "answer", reply
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        for _ in range(300):
            if self.pc.connectionState == "connected":
                return
            assert self.pc.connectionState not in ("failed", "closed")
            await asyncio.sleep(0.05)
        raise AssertionError(f"peer never connected: {self.pc.connectionState}")

    async def packets_sent(self) -> int:
        stats = await self.pc.getStats()
        return sum(s.packetsSent for s in stats.values() if s.type == "outbound-rtp")

    async def bye(self) -> None:
        try:
            self.ws.send(json.dumps({"type": "bye"}))
            await asyncio.to_thread(_drain, self.ws)
        finally:
            await self.pc.close()


def _drain(ws: Client) -> None:
    try:
        while ws.receive(10) is not None:
            pass
    except ConnectionClosed:
        pass


def host(server, room: str, action: str) -> dict:
    token = mint_token(JWT_SECRET, room, "host", "host")
    reply = server.request("POST", f"/video-calls/{room}/recording/{action}", {"Authorization": f"Bearer {token}"})
    assert reply.status in (200, 201, 202), reply.body
    return reply.json()


async def stop_and_leave(server, room: str, *peers: Peer) -> None:
    """The host stops; the peers stay a moment (each stores its last segment on the stop) and then say bye."""
    host(server, room, "stop")
    await asyncio.sleep(1.5)
    for peer in peers:
        await peer.bye()


def completed(api, recording_id: str) -> dict:
    """The recording's final status, which must say completed."""
    body = api.wait_final(recording_id, timeout=90)
    assert body["state"] == "completed", body
    return body


def decoded(path: Path) -> tuple[list[float], list[float], float]:
    """Video frame times, audio frame times (seconds) and the container's duration."""
    with av.open(str(path)) as container:
        duration = container.duration / av.time_base
    times: dict[str, list[float]] = {}
    for kind in ("video", "audio"):
        with av.open(str(path)) as container:
            streams = [s for s in container.streams if s.type == kind]
            times[kind] = [float(f.time) for f in container.decode(*streams)] if streams else []
    return times["video"], times["audio"], duration


def assert_throughout(times: list[float], duration: float, what: str, max_gap: float = 0.5) -> None:
    assert times, f"no {what} frames"
    times = sorted(times)
    assert times[0] < 1.0, f"{what} starts late: {times[0]}"
    assert times[-1] > duration - 1.0, f"{what} ends early: {times[-1]} of {duration}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < max_gap, f"{what} has a {max(gaps):.2f} s hole"


def test_aiortc_client_recorded_through_the_same_finalize(live_gunicorn, worker, api, room) -> None:
    async def scenario() -> tuple[str, float]:
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "alice", "participant"))
        await peer.connect()  # before the room records: nothing is stored yet
        await asyncio.sleep(1)
        started = host(live_gunicorn, room, "start")
        began = time.monotonic()
        await asyncio.sleep(6)
        sent = time.monotonic() - began  # media flowed from the start call to the stop call
        host(live_gunicorn, room, "stop")
        assert await peer.packets_sent() > 0
        await asyncio.sleep(1.5)  # the peer stays connected after stop: its last segment was flushed on stop
        await peer.bye()
        return started["recordingId"], sent

    recording_id, sent = asyncio.run(scenario())
    body = completed(api, recording_id)
    stream = body["participants"]["alice"]["video"]
    assert stream["missingCount"] == 0 and stream["chunks"] >= 4, stream
    assert stream.get("finalSequence") == stream["lastSequence"], stream  # the stop flush declared the end
    path = api.output_path(body, "alice")
    assert path.suffix == ".webm"
    video, audio, duration = decoded(path)
    assert abs(duration - sent) <= 1.0, (duration, sent)
    assert_throughout(video, duration, "video")
    assert_throughout(audio, duration, "audio")
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        assert (v.codec_context.name, v.width, v.height) == ("vp8", WIDTH, HEIGHT)
        assert container.streams.audio[0].codec_context.name == "opus"


def test_reconnect_within_one_recording_gives_one_output(live_gunicorn, worker, api, room) -> None:
    token = mint_token(JWT_SECRET, room, "bob", "participant")

    async def scenario() -> str:
        started = host(live_gunicorn, room, "start")
        first = Peer(live_gunicorn.port, room, token)
        await first.connect()
        await asyncio.sleep(3)
        await first.bye()  # the recording of bob ends cleanly here...
        await asyncio.sleep(1.5)
        second = Peer(live_gunicorn.port, room, token)
        await second.connect()  # ...and goes on in the same stream
        await asyncio.sleep(3)
        await stop_and_leave(live_gunicorn, room, second)
        return started["recordingId"]

    recording_id = asyncio.run(scenario())
    body = completed(api, recording_id)
    assert [o["participantId"] for o in body["outputs"]] == ["bob"]
    assert body["participants"]["bob"]["video"]["missingCount"] == 0
    (gap,) = body["participants"]["bob"]["gaps"]  # the time between the two connections, listed once
    assert 2.0 <= gap["fromSeconds"] <= 5.0 and 1.5 <= gap["toSeconds"] - gap["fromSeconds"] <= 5.0, gap
    assert api.manifest(body)["participants"]["bob"]["gaps"] == [gap]  # DESIGN §5: holes in the manifest too
    video, audio, duration = decoded(api.output_path(body, "bob"))
    assert 4.0 <= duration <= 8.5, duration  # both connections' media in one file
    assert len(video) > 60 and audio


def test_a_dropped_network_then_a_reconnect_lists_the_gap_from_when_media_stopped(live_gunicorn, worker, api,
                                                                                 room) -> None:
    """The usual reconnect: the first peer's media stops (network gone) while its socket lingers, and the participant
    comes back on a new peer, which takes over. The gap runs from the last media, not from a socket close."""
    token = mint_token(JWT_SECRET, room, "olga", "participant")

    async def scenario() -> tuple[str, float]:
        started = host(live_gunicorn, room, "start")
        first = Peer(live_gunicorn.port, room, token)
        await first.connect()
        await asyncio.sleep(3)
        for sender in first.pc.getSenders():
            sender.replaceTrack(None)  # nothing more is sent; socket and connection stay up
        dropped = time.monotonic()
        await asyncio.sleep(3)
        second = Peer(live_gunicorn.port, room, token)
        await second.connect()
        away = time.monotonic() - dropped
        await asyncio.sleep(3)
        await stop_and_leave(live_gunicorn, room, second, first)
        return started["recordingId"], away

    recording_id, away = asyncio.run(scenario())
    body = completed(api, recording_id)
    (gap,) = body["participants"]["olga"]["gaps"]
    assert away - 0.5 <= gap["toSeconds"] - gap["fromSeconds"] <= away + 2.5, (gap, away)  # + the key frame wait
    assert api.manifest(body)["participants"]["olga"]["gaps"] == [gap]


def test_a_participant_beyond_max_participants_is_told_and_closed(live_gunicorn, worker, api, room) -> None:
    """DESIGN §4: a new participant beyond MAX_PARTICIPANTS → participant_limit. Over WebRTC the refusal comes with
    the peer's first segment: the client gets the error and the close, and nothing of it is stored."""
    from workers import keys

    redis_client = api.app.extensions["tapedeck"].redis
    limit = api.app.extensions["tapedeck"].settings.max_participants

    async def scenario() -> tuple[str, dict, int]:
        started = host(live_gunicorn, room, "start")
        redis_client.sadd(keys.participants(started["recordingId"]), *[f"other{i}" for i in range(limit)])
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "pete", "participant"))
        await peer.connect()
        message = json.loads(await asyncio.to_thread(peer.ws.receive, 20))
        await asyncio.to_thread(_drain, peer.ws)
        await peer.pc.close()
        host(live_gunicorn, room, "stop")
        return started["recordingId"], message, peer.ws.close_reason

    recording_id, message, close = asyncio.run(scenario())
    assert (message["type"], message["code"], close) == ("error", "participant_limit", 4409), (message, close)
    assert not redis_client.exists(keys.stream_stats(recording_id, "pete", "video"))


def test_second_offer_is_refused(live_gunicorn, room) -> None:
    async def scenario() -> None:
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "carol", "participant"))
        await peer.connect()
        peer.ws.send(json.dumps({"type": "offer", "sdp": peer.pc.localDescription.sdp}))
        message = json.loads(await asyncio.to_thread(peer.ws.receive, 10))
        assert message["type"] == "error" and message["code"] == "already_offered"
        await asyncio.to_thread(_drain, peer.ws)
        assert peer.ws.close_reason == 4409
        await peer.pc.close()

    asyncio.run(scenario())


def _web_worker(server) -> list[psutil.Process]:
    children = psutil.Process(server.process.pid).children(recursive=True)
    workers = [p for p in children if "gunicorn" in " ".join(p.cmdline()) and p.children() == []]
    return workers


def test_fifty_connect_disconnect_cycles_leave_the_worker_flat(live_gunicorn, room) -> None:
    """Descriptors, threads and RSS of every web worker after 50 peers came and went, against after 5 warm-up ones;
    the room records meanwhile (each peer runs a recorder: before its muxer came from a template, each held an
    unused libvpx encoder: 50 cycles grew a worker by 43-65 MiB and 6-9 threads), and every other peer leaves
    without a bye."""
    token = mint_token(JWT_SECRET, room, "dave", "participant")
    host(live_gunicorn, room, "start")

    async def cycles(n: int) -> None:
        for i in range(n):
            peer = Peer(live_gunicorn.port, room, token)
            await peer.connect()
            await asyncio.sleep(0.2)
            if i % 2:
                await peer.bye()
            else:
                peer.ws.close()
                await peer.pc.close()

    def snapshot() -> dict[int, tuple[int, int, int]]:
        time.sleep(2)
        return {p.pid: (p.num_fds(), p.num_threads(), p.memory_info().rss) for p in _web_worker(live_gunicorn)}

    asyncio.run(cycles(5))
    before = snapshot()
    asyncio.run(cycles(50))
    after = snapshot()
    host(live_gunicorn, room, "stop")
    assert before and before.keys() == after.keys()
    for pid, (fds, threads, rss) in after.items():
        fds0, threads0, rss0 = before[pid]
        assert fds <= fds0 + 5, f"worker {pid}: descriptors {fds0} → {fds}"
        assert threads <= threads0 + 2, f"worker {pid}: threads {threads0} → {threads}"
        assert rss <= rss0 + 25 * 2**20, f"worker {pid}: RSS {rss0 >> 20} → {rss >> 20} MiB"


def test_a_second_peer_of_the_same_participant_takes_over(live_gunicorn, worker, api, room) -> None:
    """Two peers of one participant at once (a second tab, or a reconnect before the first peer noticed it is gone,
    maybe on another web process): the newer one records, the older stops, one stream without conflicts."""
    token = mint_token(JWT_SECRET, room, "frank", "participant")

    async def scenario() -> str:
        started = host(live_gunicorn, room, "start")
        first = Peer(live_gunicorn.port, room, token)
        await first.connect()
        await asyncio.sleep(3)
        second = Peer(live_gunicorn.port, room, token)
        await second.connect()
        await asyncio.sleep(3)
        await stop_and_leave(live_gunicorn, room, second, first)
        return started["recordingId"]

    recording_id = asyncio.run(scenario())
    body = completed(api, recording_id)
    stream = body["participants"]["frank"]["video"]
    assert stream["missingCount"] == 0 and stream.get("finalSequence") == stream["lastSequence"], stream
    video, audio, duration = decoded(api.output_path(body, "frank"))
    assert 5.0 <= duration <= 8.5, duration
    assert_throughout(video, duration, "video", max_gap=1.5)  # the hand-over may cost the time to a key frame
    assert "gaps" not in body["participants"]["frank"]  # a take-over is no gap: the older peer sent until then


def test_claims_keep_one_peer_and_unique_sequences(app) -> None:
    from workers import keys
    from workers.webrtc.claims import Claims

    redis_client = app.extensions["tapedeck"].redis
    claims, room = Claims(redis_client), f"claims-{time.time_ns()}"
    recording_id = f"rec_claims{time.time_ns()}"
    redis_client.hset(keys.stream_stats(recording_id, "gina", "video"), "max", 6)  # the stream already holds 0-6
    claims.claim(room, "gina", "old")
    assert claims.holds(room, "gina", "old")
    claims.claim(room, "gina", "new")
    assert not claims.holds(room, "gina", "old") and claims.holds(room, "gina", "new")
    claims.release(room, "gina", "old")  # an older peer's release never drops the newer claim
    assert claims.holds(room, "gina", "new")
    assert [claims.next_sequence(recording_id, "gina", "video") for _ in range(3)] == [7, 8, 9]
    assert claims.next_sequence(recording_id, "hugo", "video") == 0


def test_gaps_count_recorded_time_not_paused_time(app) -> None:
    """DESIGN §4: a paused span is absent from the output and limits do not count it; a gap's seconds are recording
    time the same way (paused time left out), and a gap lying wholly inside a pause lost nothing, so is not listed."""
    from workers import keys
    from workers.status import participant_entries
    from workers.state import RecordingStore
    from workers.webrtc.claims import Gaps

    redis_client = app.extensions["tapedeck"].redis
    recording_id, t0 = f"rec_gaps{time.time_ns()}", 1_800_000_000.0
    redis_client.hset(keys.recording(recording_id), mapping={
        "recordingId": recording_id, "room": "gaps", "state": "recording", "startedAt": repr(t0),
        "pauses": f"{t0 + 10}:{t0 + 20};{t0 + 40}:"})  # paused 10-20 s, and again from 40 s on
    redis_client.sadd(keys.streams(recording_id), "kate/video")
    gaps = Gaps(redis_client)
    for ended, resumed in ((5, 25), (12, 18), (30, 35), (38, 45)):
        gaps.ended(recording_id, "kate", t0 + ended)
        gaps.resumed(recording_id, "kate", t0 + resumed)
    listed = [{"fromSeconds": 5.0, "toSeconds": 15.0},   # 5-25 s of wall time, 10 of them paused
              {"fromSeconds": 20.0, "toSeconds": 25.0},  # after the first pause: 10 s less
              {"fromSeconds": 28.0, "toSeconds": 30.0}]  # runs into the open pause, which counts up to 40 s
    store = RecordingStore(redis_client)
    assert Gaps.read(redis_client, recording_id, store.get(recording_id)) == {"kate": listed}
    assert participant_entries(store, recording_id, {})["kate"]["gaps"] == listed


def test_expired_token_ends_that_participants_recording_cleanly(live_gunicorn, worker, api, room) -> None:
    async def scenario() -> tuple[str, dict]:
        started = host(live_gunicorn, room, "start")
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "ivan", "participant", ttl=5))
        await peer.connect()
        message = json.loads(await asyncio.to_thread(peer.ws.receive, 15))  # no refresh: the token runs out
        await asyncio.to_thread(_drain, peer.ws)
        await asyncio.sleep(2)  # the room records on without ivan
        host(live_gunicorn, room, "stop")
        await peer.pc.close()
        return started["recordingId"], {**message, "close": peer.ws.close_reason}

    recording_id, message = asyncio.run(scenario())
    assert (message["type"], message["code"], message["close"]) == ("error", "token_expired", 4401)
    body = completed(api, recording_id)
    stream = body["participants"]["ivan"]["video"]
    assert stream["missingCount"] == 0 and "finalSequence" not in stream, stream  # ended, not declared final
    video, audio, duration = decoded(api.output_path(body, "ivan"))
    assert 2.0 <= duration <= 5.5 and video and audio, duration  # what it sent while its token lived


def test_pause_is_cut_from_a_peer_that_keeps_sending(live_gunicorn, worker, api, room) -> None:
    async def scenario() -> str:
        started = host(live_gunicorn, room, "start")
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "judy", "participant"))
        await peer.connect()
        await asyncio.sleep(3)
        host(live_gunicorn, room, "pause")
        await asyncio.sleep(3)
        host(live_gunicorn, room, "resume")
        await asyncio.sleep(3)
        await stop_and_leave(live_gunicorn, room, peer)
        return started["recordingId"]

    recording_id = asyncio.run(scenario())
    body = completed(api, recording_id)
    video, audio, duration = decoded(api.output_path(body, "judy"))
    assert 4.5 <= duration <= 7.5, duration  # about 9 s sent, 3 s of them paused


def test_a_web_worker_that_exits_flushes_its_peers(stack_env, tmp_path, api, room) -> None:
    """gunicorn's worker_exit hook (gunicorn.conf.py): a worker leaving mid-recording (SIGINT to its own Procfile web)
    stores what its peer recorded since the last segment, and notes when the participant stopped sending."""
    import signal

    from tests.procfile import minimal_env, start_web, stop_web, wait_web
    from tests.services import free_port
    from workers import keys

    port = free_port()
    env = minimal_env(tmp_path, **stack_env, PORT=str(port), WEB_CONCURRENCY="1")
    web = start_web(env, tmp_path / "web.log")
    try:
        wait_web(web, port, tmp_path / "web.log")

        async def scenario() -> str:
            started = host(live_web(port), room, "start")
            peer = Peer(port, room, mint_token(JWT_SECRET, room, "kim", "participant"))
            await peer.connect()
            await asyncio.sleep(3.5)  # three whole segments, and half of a fourth
            os.killpg(web.pid, signal.SIGINT)
            await asyncio.to_thread(web.wait, 30)
            await peer.pc.close()
            return started["recordingId"]

        recording_id = asyncio.run(scenario())
    finally:
        stop_web(web, (signal.SIGKILL,))
    redis_client = api.app.extensions["tapedeck"].redis
    stats = redis_client.hgetall(keys.stream_stats(recording_id, "kim", "video"))
    assert int(stats[b"chunks"]) == int(stats[b"max"]) + 1 >= 4, stats  # the half segment too, no hole
    assert redis_client.hexists(keys.webrtc_gaps(recording_id), "kim:ended")


def live_web(port: int):
    """A `host` target for a Procfile web line the test started (and signals) itself."""
    from tests.live_gunicorn import LiveGunicorn

    return LiveGunicorn(port, Path("/dev/null"), None)  # type: ignore[arg-type]


def test_audio_only_peer_and_a_stop_from_another_process(live_gunicorn, worker, api, room) -> None:
    """An offer without video records audio alone; the stop comes from this test's own app (not a web worker), so
    only Redis can carry it to the peer, which then stores its last segment as final."""
    async def scenario() -> str:
        started = api.start().get_json()
        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "lena", "participant"))
        await peer.connect(video=False)
        await asyncio.sleep(4)
        assert api.stop().status_code == 202
        await asyncio.sleep(1.5)
        await peer.bye()
        return started["recordingId"]

    recording_id = asyncio.run(scenario())
    body = completed(api, recording_id)
    stream = body["participants"]["lena"]["video"]
    assert stream.get("finalSequence") == stream["lastSequence"], stream
    path = api.output_path(body, "lena")
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["audio"]
    _video, audio, duration = decoded(path)
    assert 3.0 <= duration <= 5.5, duration
    assert_throughout(audio, duration, "audio")


def test_video_the_server_would_have_to_decode_is_declined(live_gunicorn, worker, api, room) -> None:
    """H.264-only video is answered inactive (recording it would mean decoding and encoding): with Opus audio the
    audio is recorded; without audio the offer is refused as no_media."""
    async def scenario() -> str:
        started = host(live_gunicorn, room, "start")
        lone = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "olga", "participant"))
        lone.pc.addTrack(ColorBars())
        lone.pc.getTransceivers()[0].setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"])
        await lone.pc.setLocalDescription(await lone.pc.createOffer())
        lone.ws.send(json.dumps({"type": "offer", "sdp": lone.pc.localDescription.sdp}))
        refusal = json.loads(await asyncio.to_thread(lone.ws.receive, 20))
        assert refusal["type"] == "error" and refusal["code"] == "no_media", refusal
        await lone.pc.close()

        peer = Peer(live_gunicorn.port, room, mint_token(JWT_SECRET, room, "max", "participant"))
        await peer.connect(video_codec="video/H264")
        await asyncio.sleep(3)
        await stop_and_leave(live_gunicorn, room, peer)
        return started["recordingId"]

    body = completed(api, asyncio.run(scenario()))
    with av.open(str(api.output_path(body, "max"))) as container:
        assert [s.type for s in container.streams] == ["audio"]
