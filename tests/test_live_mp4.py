"""Live finalize of `format: mp4` (issue 15): each window transcoded to H.264/AAC while the room records gives an
MP4 with batch's frames (video and audio frame counts, duration within a frame), decodable end to end, seekable,
faststart; what the live transcode cannot do exactly leaves the participant to batch."""
from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import av
import pytest

from tests.media import Recording, encode_fmp4, encode_webm, probe, seek_and_decode, slice_timeslice
from tests.test_live_flow import live_api, live_env, resources  # noqa: F401 - the flow test's own fixtures
from workers.live import transcode
from workers.live.checksum import parts_checksum
from workers.live.state import LiveStates
from workers.live.step import LiveFinalizer
from workers.media.muxer import StreamInput
from workers.outputs import prepare_output
from workers.resources import Resources
from workers.settings import get_settings

CLIP = Recording(seconds=9, keyframe_seconds=3.0)
"""Keyframes 3 s apart, so most windows begin between two of them."""


@pytest.fixture
def live(stack_env, staging_backend) -> LiveFinalizer:
    if staging_backend != "local":
        pytest.skip("live finalize folds chunks on local staging only (object-store staging goes to batch)")
    settings = get_settings()
    resources = Resources.build(settings)
    return LiveFinalizer(resources.store, resources.staging, LiveStates(resources.redis), mp4=settings.mp4)


@pytest.fixture
def rec(api) -> str:
    response = api.start(format="mp4")
    assert response.status_code == 201 and response.get_json()["format"] == "mp4"
    return response.get_json()["recordingId"]


def send(api, rec: str, pieces: list[bytes], first: int = 0) -> None:
    for offset, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", first + offset, piece).status_code == 202


def batch_mp4(live: LiveFinalizer, rec: str, out: Path):
    chunks = live.store.chunks(rec, "alice", "video")
    paths = live.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in sorted(chunks.items())])
    out.mkdir(parents=True, exist_ok=True)
    return prepare_output([StreamInput("video", paths)], out, "alice", "mp4", mp4=live.mp4,  # type: ignore[arg-type]
                          thumbnail_offset=1.0, thumbnail_width=0)


def finish(live: LiveFinalizer, rec: str):
    return live.finish(live.store.get(rec), "alice", ["video"])


def packet_counts(path: Path) -> dict[str, int]:
    with av.open(str(path)) as container:
        counts: dict[str, int] = {}
        for packet in container.demux():
            if packet.size:
                counts[packet.stream.type] = counts.get(packet.stream.type, 0) + 1
        return counts


def pictures(path: Path) -> list[bytes]:
    """Every decoded picture, shrunk to 32x24 grey: enough to see a frame decoded from a wrong reference."""
    with av.open(str(path)) as container:
        return [bytes(frame.reformat(width=32, height=24, format="gray").planes[0])
                for frame in container.decode(video=0)]


def top_level_boxes(path: Path) -> list[str]:
    names, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[offset:offset + 8])
        names.append(name.decode())
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        offset += size
    return names


def test_live_mp4_has_batch_frames_and_duration(api, rec, live, tmp_path):
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    for start in range(0, 24, 6):  # steps while recording; their windows begin between keyframes
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and state.windows >= 2 and state.transcode is not None
    assert state.mp4 is not None and state.mp4.body > 0  # the MP4's media written while recording
    send(api, rec, pieces[24:], 24)
    in_place = mp4_outputs("in_place")
    result = finish(live, rec)
    assert result is not None and result.path.name == "alice.live.mp4"  # closed in place, not copied at stop
    assert mp4_outputs("in_place") == in_place + 1
    assert result.checksum == parts_checksum(result.path, live.part_size, result.checksum.head)
    assert result.checksum.head > 0 and result.bytes == result.path.stat().st_size
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert live.states.get(rec, "alice").windows >= 3
    assert (result.format, result.method) == (reference.format, reference.method) == ("mp4", "transcode")
    assert result.tracks == reference.tracks
    ours, theirs = probe(result.path), probe(reference.path)
    assert ours.codecs == theirs.codecs == [("video", "h264"), ("audio", "aac")]
    assert ours.decode_errors == 0 and ours.frames == theirs.frames and ours.frames["video"] == 9 * 30
    assert packet_counts(result.path) == packet_counts(reference.path)
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=1 / 30)
    assert ours.ends["audio"] == pytest.approx(theirs.ends["audio"], abs=1024 / 48_000)
    for mine, batch in zip(pictures(result.path), pictures(reference.path)):  # same pictures, re-encoded alike
        assert sum(abs(a - b) for a, b in zip(mine, batch)) / len(mine) < 4
    assert 4.0 <= seek_and_decode(result.path, 6.0) <= 6.0  # a keyframe at most one interval before
    boxes = top_level_boxes(result.path)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart: playable while it downloads


def test_a_single_window_at_stop(api, rec, live, tmp_path):
    send(api, rec, slice_timeslice(encode_webm(replace(CLIP, seconds=3)), 5))
    live.step(rec)
    result = finish(live, rec)
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert result is not None and packet_counts(result.path) == packet_counts(reference.path)
    assert probe(result.path).frames == probe(reference.path).frames


def test_h264_input_copies_video_and_transcodes_audio(api, rec, live, tmp_path):
    """Chromium's H.264 recordings: batch copies the video into the MP4 and transcodes Opus; so does live, into the
    MP4 written while recording, whose copied video is batch's packet for packet (timestamps, sizes, bytes)."""
    from tests.test_live_mp4_output import ffprobe

    pieces = slice_timeslice(encode_webm(replace(CLIP, video_codec="libx264")), 18)
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    result = finish(live, rec)
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert result is not None and result.method == reference.method == "mixed"
    assert result.path.name == "alice.live.mp4"  # written while recording, not copied at stop
    assert result.tracks == reference.tracks
    assert packet_counts(result.path) == packet_counts(reference.path)
    assert probe(result.path).frames == probe(reference.path).frames and probe(result.path).decode_errors == 0
    ours, theirs = ffprobe(result.path), ffprobe(reference.path)
    video = next(i for i, s in enumerate(theirs["streams"]) if s["codec_type"] == "video")
    assert ours["packets"][video] == theirs["packets"][video]
    assert ours["streams"][video] == theirs["streams"][video]


def test_fragmented_mp4_input_is_copied_into_the_live_mp4(api, rec, live, tmp_path):
    """Safari's H.264/AAC fragmented MP4: batch copies both tracks into the MP4 (no transcode); so does live, into
    the MP4 written while recording, packet for packet (timestamps, sizes, bytes) and with the same streams."""
    from tests.test_live_mp4_output import ffprobe

    pieces = slice_timeslice(encode_fmp4(CLIP), 18)
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    assert live.states.get(rec, "alice").failed is None
    result = finish(live, rec)
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert result is not None and result.method == reference.method == "copy"
    assert result.path.name == "alice.live.mp4" and live.states.get(rec, "alice").windows >= 2
    assert result.tracks == reference.tracks
    ours, theirs = ffprobe(result.path), ffprobe(reference.path)
    assert ours["packets"] == theirs["packets"] and ours["streams"] == theirs["streams"]
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=0.001)
    assert probe(result.path).decode_errors == 0


def test_keyframes_too_far_apart_leave_the_participant_to_batch(api, rec, live, monkeypatch):
    monkeypatch.setattr(transcode, "MAX_CONTEXT_SECONDS", 0.5)  # the window ends ~0.9 s after a keyframe
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    send(api, rec, pieces[:8])
    live.step(rec)
    assert "keyframes" in live.states.get(rec, "alice").failed
    assert finish(live, rec) is None


def test_a_lost_context_file_leaves_the_participant_to_batch(api, rec, live):
    """The next window decodes from the packets the last one kept on disk: without them it cannot start exactly."""
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    send(api, rec, pieces[:8])
    live.step(rec)
    assert live.states.get(rec, "alice").windows == 1
    for context in (live.staging.output_dir(rec) / "live").glob("alice.context*.mkv"):
        context.unlink()
    send(api, rec, pieces[8:], 8)
    live.step(rec)
    assert "context" in live.states.get(rec, "alice").failed
    assert finish(live, rec) is None


def test_finalize_uploads_the_live_mp4(live_env, resources, live_api, tmp_path):
    """Through intake and finalize: the MP4 stored is the one written while recording, and its manifest entry says
    what batch's would, but for the checksum: parts hashed while recording, the first part holding the header."""
    rec = live_api.start(format="mp4").get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    for sequence, piece in enumerate(pieces):
        assert live_api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        if sequence % 9 == 8:
            resources.finalizer.live.step(rec)  # what tapedeck.live_step runs on the live queue
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    state = resources.finalizer.live.states.get(rec, "alice")
    assert state.failed is None and state.closed and state.windows >= 2  # the live path made it
    output = live_api.status(rec).get_json()["outputs"][0]
    stored = resources.provider.path_for(output["key"])  # type: ignore[attr-defined]
    reference = batch_mp4(resources.finalizer.live, rec, tmp_path / "batch")
    assert output["key"].endswith("/alice.mp4") and output["sha256"] is None
    checksum = output["checksum"]
    first_part = checksum["firstPartSize"] - checksum["partSize"]
    assert first_part > 0 and checksum["composite"] == parts_checksum(stored, checksum["partSize"],
                                                                      first_part).composite
    assert (output["format"], output["method"], output["tracks"]) == (reference.format, reference.method,
                                                                      reference.tracks)
    assert output["durationSeconds"] == pytest.approx(reference.duration_seconds, abs=1 / 30)
    assert packet_counts(stored) == packet_counts(reference.path)
    assert probe(stored).decode_errors == 0 and probe(stored).frames == probe(reference.path).frames
    assert output["thumbnail"] is not None


def test_audio_follows_the_timestamps_as_batch_does(api, rec, live, tmp_path):
    """A clip repeated (as bench recordings are): at each seam the audio's timestamps and its sample count part by a
    few ms. Batch's AAC follows the timestamps; so must the live one, or its duration drifts from batch's."""
    from bench.finalize_bench import synthesize

    clip = tmp_path / "clip.webm"
    clip.write_bytes(encode_webm(replace(CLIP, seconds=2.0, keyframe_seconds=1.0)))
    synthesize(clip, tmp_path / "long.webm", 20.0)
    pieces = slice_timeslice((tmp_path / "long.webm").read_bytes(), 40)
    for start in range(0, 40, 8):
        send(api, rec, pieces[start:start + 8], start)
        live.step(rec)
    result = finish(live, rec)
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert result is not None and packet_counts(result.path) == packet_counts(reference.path)
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=1 / 30)
    assert probe(result.path).ends["audio"] == pytest.approx(probe(reference.path).ends["audio"], abs=1024 / 48_000)


@pytest.mark.parametrize("case", ["plain", "repeated", "short tail"])
def test_the_live_mp4_is_what_ffmpegs_muxer_makes_of_the_same_packets(api, rec, live, tmp_path, monkeypatch, case):
    """End to end, windows encoded apart (each from its own IDR): every packet the windows handed to the live MP4,
    muxed in one pass by FFmpeg's muxer as to_mp4 would, reads the same as the live file (per track every packet,
    the streams, the format, every moov box but the chunk layout). "repeated": a noisy clip repeated, as the
    benchmarks' recordings are, where the track's decode span and its presentation span differ at the end (mdhd
    holds the latter; a check that they were equal sent such recordings to the copy at stop). "short tail": the
    last window is a few frames."""
    from bench.finalize_bench import synthesize
    from tests.test_live_mp4_output import ffprobe, moov_boxes
    from workers.live.mp4_output import LiveMp4, _as_stream
    from workers.media.convert import plan_track

    seen: list = []
    append = LiveMp4.append
    monkeypatch.setattr(LiveMp4, "append", lambda self, progress, packets: (seen.extend(packets),
                                                                             append(self, progress, packets))[1])
    media, count, stride = encode_webm(CLIP), 28, 5
    if case == "short tail":
        media = encode_webm(replace(CLIP, seconds=6.1))
    if case == "repeated":
        clip = tmp_path / "clip.webm"
        clip.write_bytes(encode_webm(Recording(seconds=4, noise=0.05, video_bit_rate=600_000)))
        synthesize(clip, tmp_path / "long.webm", 12.0)
        media, count = (tmp_path / "long.webm").read_bytes(), 12
    pieces = slice_timeslice(media, count)
    for start in range(0, count, stride):
        send(api, rec, pieces[start:start + stride], start)
        live.step(rec)
    state = live.states.get(rec, "alice")
    result = finish(live, rec)
    assert result is not None and result.path.name == "alice.live.mp4"
    reference = tmp_path / "reference.mp4"
    with av.open(str(reference), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        streams = [plan_track(out, _as_stream(s), live.mp4, keyint=state.transcode.keyint).out
                   for s in state.mp4.sources]
        for p in sorted(seen, key=lambda p: (p.dts * p.time_base, p.track)):
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.duration, packet.time_base = p.pts, p.dts, p.duration, p.time_base
            packet.is_keyframe, packet.stream = p.key, streams[p.track]
            out.mux(packet)
    ours, theirs = ffprobe(result.path), ffprobe(reference)
    assert ours["packets"] == theirs["packets"]
    assert ours["streams"] == theirs["streams"] and ours["format"] == theirs["format"]
    assert moov_boxes(result.path) == moov_boxes(reference)


def mp4_outputs(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("tapedeck_live_mp4_outputs_total", {"outcome": outcome}) or 0.0


def test_a_live_mp4_that_cannot_be_closed_is_copied_from_the_live_matroska(api, rec, live, tmp_path, monkeypatch):
    """Whatever keeps the MP4 written while recording from closing (here: the muxer's parameters at stop differ),
    stop still gives the MP4 batch would, copied from the live Matroska as before, and the metric says so."""
    from workers.live import mp4_output

    pieces = slice_timeslice(encode_webm(CLIP), 18)
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    assert live.states.get(rec, "alice").mp4 is not None

    def refuse(*_args, **_kwargs):
        raise mp4_output.Unsupported("the MP4 muxer's encoders have other codec parameters than the windows'")

    monkeypatch.setattr(mp4_output.LiveMp4, "close", refuse)
    copied, in_place = mp4_outputs("copied"), mp4_outputs("in_place")
    result = finish(live, rec)
    reference = batch_mp4(live, rec, tmp_path / "batch")
    assert result is not None and result.path.name == "alice.mp4" and result.checksum is None  # the copy, hashed whole
    assert (mp4_outputs("copied"), mp4_outputs("in_place")) == (copied + 1, in_place)
    assert probe(result.path).frames == probe(reference.path).frames and probe(result.path).decode_errors == 0
