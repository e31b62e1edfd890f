"""workers/webrtc/forwarding.py against the pinned aiortc: a real loopback peer pair in this process, the receiving
side's tracks yield the sender's encoded VP8 / Opus frames (no decoding), a PLI brings a key frame, and the
recorder turns those frames into segments that decode as one WebM with both tracks."""
from __future__ import annotations

import asyncio
import io

import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
import av
import pytest
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection

from tests.test_webrtc_recording import HEIGHT, WIDTH, ColorBars
from workers.webrtc import forwarding
from workers.webrtc.recorder import SegmentRecorder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", aiortc.rtcrtpreceiver.get_decoder)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    forwarding.install(["127.0.0.1"])


def test_pinned_version_and_host_addresses(installed) -> None:
    assert aiortc.__version__ == forwarding.AIORTC_VERSION
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(False, True) == []


def test_vp8_key_frame_header_parsing() -> None:
    key = forwarding.EncodedFrame("video", "video/vp8", b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01rest", 0, 90000)
    assert key.keyframe and key.vp8_size() == (640, 480)
    inter = forwarding.EncodedFrame("video", "video/vp8", b"\x11\x02\x00rest-of-frame", 0, 90000)
    assert not inter.keyframe and inter.vp8_size() is None
    assert forwarding.EncodedFrame("audio", "audio/opus", b"\xfc", 0, 48000).keyframe


async def _pair() -> tuple[RTCPeerConnection, RTCPeerConnection, dict]:
    sender, receiver = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(ColorBars())
    sender.addTrack(AudioStreamTrack())
    tracks: dict = {}
    receiver.on("track", lambda track: tracks.__setitem__(track.kind, track))
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    for transceiver in receiver.getTransceivers():
        assert forwarding.prefer_forwarded_codecs(transceiver)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return sender, receiver, tracks


def test_remote_tracks_yield_encoded_frames_and_pli_brings_a_key_frame(installed) -> None:
    async def scenario() -> None:
        sender, receiver, tracks = await _pair()
        try:
            video = [await asyncio.wait_for(tracks["video"].recv(), 20) for _ in range(40)]
            audio = [await asyncio.wait_for(tracks["audio"].recv(), 20) for _ in range(20)]
            assert all(isinstance(f, forwarding.EncodedFrame) for f in video + audio)
            assert {f.codec for f in video} == {"video/vp8"} and {f.codec for f in audio} == {"audio/opus"}
            assert video[0].keyframe and video[0].vp8_size() == (WIDTH, HEIGHT)
            assert not all(f.keyframe for f in video[1:])  # inter frames pass through as they are
            assert [f.timestamp for f in video] == sorted(f.timestamp for f in video)
            video_receiver = next(t.receiver for t in receiver.getTransceivers() if t.kind == "video")
            for _ in range(5):  # drain what was queued before the request
                await tracks["video"].recv()
            assert await forwarding.request_keyframe(video_receiver)
            later = [await asyncio.wait_for(tracks["video"].recv(), 20) for _ in range(30)]
            assert any(f.keyframe for f in later), "no key frame after a PLI"

            chunks: list[tuple[int, bytes, bool]] = []
            recorder = SegmentRecorder(lambda seq, data, final, ts: chunks.append((seq, data, final)), 7,
                                       with_video=True, with_audio=True, segment_seconds=0.5)
            for _ in range(60):
                recorder.add(await tracks["video"].recv())
                recorder.add(await tracks["audio"].recv())
                if recorder.due():
                    recorder.cut()
            recorder.finish(final=True)
        finally:
            await sender.close()
            await receiver.close()
        assert [seq for seq, _, _ in chunks] == list(range(7, 7 + len(chunks)))
        assert chunks[0][1][:4] == b"\x1a\x45\xdf\xa3" and chunks[-1][2] and not any(f for _, _, f in chunks[:-1])
        with av.open(io.BytesIO(b"".join(data for _, data, _ in chunks))) as container:
            kinds = sorted(s.type for s in container.streams)
            frames = sum(1 for _ in container.decode(video=0))
        assert kinds == ["audio", "video"] and frames > 20

    asyncio.run(scenario())


def test_open_recorders_hold_no_encoder_and_abandon_frees_the_muxer() -> None:
    """A WebM muxer's stream made with add_stream opens a libvpx encoder though nothing is encoded: every recording
    peer held ~8 MB and two idle native threads for it (measured: 50 peers, +9 threads in a web worker). Streams
    from a template open none; abandon() (a peer taken over) closes the muxer at once."""
    import os

    import psutil

    key = forwarding.EncodedFrame("video", "video/vp8", b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + bytes(64), 0,
                                  90000)

    def native_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    warm = SegmentRecorder(lambda *_: None, 0, with_video=True, with_audio=True)
    warm.add(key)  # the template of this size is made once
    before, rss = native_threads(), psutil.Process().memory_info().rss
    recorders = [SegmentRecorder(lambda *_: None, 0, with_video=True, with_audio=True) for _ in range(10)]
    for recorder in recorders:
        recorder.add(key)
        assert recorder.container is not None and recorder.frames["video"] == 1
    assert native_threads() <= before  # an encoder each added two; other tests' threads may end meanwhile
    assert psutil.Process().memory_info().rss - rss < 10 * 2**20  # an encoder each was 8 MB each
    stored: list = []
    taken_over = SegmentRecorder(lambda *args: stored.append(args), 0, with_video=True, with_audio=False)
    taken_over.add(key)
    taken_over.abandon()
    assert taken_over.finished and stored == [] and taken_over.container is not None
    taken_over.add(key)  # frames after the take-over are ignored
    assert taken_over.frames["video"] == 1
    for recorder in recorders:
        recorder.finish(final=False)
