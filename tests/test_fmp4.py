"""Fragmented MP4 (H.264/AAC, as Safari's MediaRecorder writes it) through the same chunk rules as WebM:
PyAV encodes it, the muxer joins the chunks, every assertion decodes the output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.media import Recording, encode_fmp4, encode_webm, probe, seek_and_decode, slice_timeslice, write_chunks
from tests.media_layout import header_length, slice_fragments
from workers.media.chunk_stream import ChunkStream
from workers.media.errors import MediaError
from workers.media.fmp4 import FragmentView, FragmentWalker
from workers.media.muxer import StreamInput, mux_participant

TEN_SECONDS = Recording(seconds=10)
FPS = TEN_SECONDS.fps
AAC_PER_SECOND = 48_000 / 1024


@pytest.fixture(scope="module")
def recording() -> bytes:
    """10 s of H.264+AAC fragmented MP4, a fragment per keyframe (every second)."""
    return encode_fmp4(TEN_SECONDS)


@pytest.fixture(scope="module")
def source(recording: bytes, tmp_path_factory) -> object:
    path = tmp_path_factory.mktemp("fmp4") / "source.mp4"
    path.write_bytes(recording)
    return probe(path)


@pytest.fixture
def chunks(recording: bytes, tmp_path: Path) -> list[tuple[int, Path]]:
    """Cut like a 1 s timeslice: 10 chunks of equal bytes, not aligned to fragments."""
    return write_chunks(slice_timeslice(recording, 10), tmp_path / "video")


def mux(chunks: list[tuple[int, Path]], directory: Path, name: str = "sam"):
    return mux_participant([StreamInput("video", chunks)], directory / "out", name)


def test_in_order_fmp4_becomes_seekable_matroska_with_every_frame(chunks, source, tmp_path: Path) -> None:
    assert len(slice_fragments(chunks_bytes(chunks))) == 10  # init + first fragment, then one per second

    result = mux(chunks, tmp_path)

    assert result.format == "matroska" and result.path.name == "sam.mkv"  # H.264 is not WebM-legal
    assert [(t.media_type, t.codec) for t in result.tracks] == [("video", "h264"), ("audio", "aac")]
    assert (result.tracks[0].width, result.tracks[0].height) == (320, 240)
    output = probe(result.path)
    assert output.codecs == [("video", "h264"), ("audio", "aac")]
    assert output.frames == source.frames and output.decode_errors == 0
    assert source.frames["video"] == 300 and source.frames["audio"] >= 10 * AAC_PER_SECOND
    assert output.duration == pytest.approx(source.duration, abs=0.01)
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)
    assert (result.segments, result.dropped_chunks, result.dropped_packets) == (1, [], 0)
    assert (result.start_seconds, result.timestamp_repairs) == (0.0, 0)
    landed = seek_and_decode(result.path, 5.0)
    assert landed is not None and 4.0 <= landed <= 5.05


def test_a_missing_middle_chunk_costs_only_the_fragments_it_cut(chunks, source, tmp_path: Path) -> None:
    result = mux(chunks[:5] + chunks[6:], tmp_path)

    output = probe(result.path)
    lost = source.frames["video"] - output.frames["video"]
    assert 0 < lost <= 2 * FPS  # a 1 s chunk touches at most two 1 s fragments
    assert source.frames["audio"] - output.frames["audio"] <= 2 * AAC_PER_SECOND + 2
    assert output.decode_errors == 0  # whole fragments only: nothing half-read reaches a decoder
    assert max(output.video_times) >= 9.9
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)  # the hole stays a hole in time
    assert result.timestamp_repairs == 0


def test_fragment_aligned_chunks_lose_exactly_the_missing_fragment(recording: bytes, source, tmp_path: Path) -> None:
    pieces = slice_fragments(recording)
    chunks = write_chunks(pieces, tmp_path / "v")

    whole = probe(mux(chunks, tmp_path, "whole").path)
    result = mux(chunks[:4] + chunks[5:], tmp_path, "holed")

    assert whole.frames == source.frames
    output = probe(result.path)
    assert source.frames["video"] - output.frames["video"] == FPS  # one keyframe interval
    assert abs(source.frames["audio"] - output.frames["audio"] - AAC_PER_SECOND) <= 2
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)


def test_a_corrupted_middle_chunk_costs_only_its_share(chunks, source, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.chunk"
    garbage.write_bytes(os.urandom(chunks[5][1].stat().st_size))

    result = mux([*chunks[:5], (5, garbage), *chunks[6:]], tmp_path)

    output = probe(result.path)
    assert output.frames["video"] >= source.frames["video"] - 2 * FPS
    assert output.frames["audio"] >= source.frames["audio"] - 2 * AAC_PER_SECOND - 2
    assert max(output.video_times) >= 9.9
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05) and result.timestamp_repairs == 0


def test_a_missing_header_chunk_is_a_clear_media_error(chunks, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"header chunk \(sequence 0\) is missing for video stream; chunks 1-9"):
        mux(chunks[1:], tmp_path)


def test_an_init_segment_cut_by_a_hole_is_a_clear_media_error(recording: bytes, tmp_path: Path) -> None:
    init = header_length(recording)
    pieces = [recording[:init // 2], recording[init // 2:init], recording[init:]]
    chunks = write_chunks(pieces, tmp_path / "v")
    with pytest.raises(MediaError, match="MP4 init segment"):
        mux([chunks[0], chunks[2]], tmp_path)
    assert not list((tmp_path / "out").glob("sam*"))


def test_the_walker_keeps_the_init_and_whole_fragments_only(chunks, recording: bytes) -> None:
    paths = [path for _, path in chunks]
    with ChunkStream(paths) as stream:
        plan = FragmentWalker(stream).plan()
        assert (plan.fragments, plan.cuts) == (10, 0)
        assert FragmentView(ChunkStream(paths), plan).read() == recording[:recording.rindex(b"mfra") - 4]
    holed = chunks[:3] + chunks[4:]
    with ChunkStream([p for _, p in holed], [s for s, _ in holed]) as stream:
        plan = FragmentWalker(stream).plan()
        assert plan.cuts == 1 and plan.fragments in (8, 9)


def test_a_restarted_recorder_with_a_new_init_segment_joins_on(recording: bytes, tmp_path: Path) -> None:
    first = write_chunks(slice_timeslice(recording, 10), tmp_path / "v")
    second = write_chunks(slice_timeslice(encode_fmp4(Recording(seconds=4)), 4), tmp_path / "v", first_sequence=10)

    result = mux(first + second, tmp_path)

    assert (result.segments, result.timestamp_repairs, result.dropped_chunks) == (2, 0, [])
    assert result.duration_seconds == pytest.approx(14.0, abs=0.1)
    output = probe(result.path)
    assert output.frames["video"] == 14 * FPS
    assert max(b - a for a, b in zip(output.video_times, output.video_times[1:])) < 0.06


def test_a_pause_inside_fmp4_is_collapsed(tmp_path: Path) -> None:
    data = encode_fmp4(Recording(seconds=6, pts_gap=(3.0, 10.0)))

    result = mux(write_chunks(slice_timeslice(data, 6), tmp_path / "v"), tmp_path)

    assert (result.timestamp_repairs, result.dropped_packets) == (1, 0)
    assert result.duration_seconds == pytest.approx(6.0, abs=0.06)  # the 10 s pause is not a frozen frame
    output = probe(result.path)
    assert output.frames["video"] == 180 and output.duration == pytest.approx(6.0, abs=0.06)
    assert max(b - a for a, b in zip(output.video_times, output.video_times[1:])) < 0.06
    assert output.ends["audio"] == pytest.approx(output.ends["video"] + 1 / FPS, abs=0.05)


def test_fragments_restarting_at_zero_without_an_init_segment_go_on(tmp_path: Path) -> None:
    first, second = encode_fmp4(Recording(seconds=4)), encode_fmp4(Recording(seconds=3))
    data = first[:first.rindex(b"mfra") - 4] + second[header_length(second):]

    result = mux(write_chunks(slice_timeslice(data, 7), tmp_path / "v"), tmp_path)

    assert (result.segments, result.timestamp_repairs) == (1, 1)
    assert result.duration_seconds == pytest.approx(7.0, abs=0.08)
    output = probe(result.path)
    assert output.frames["video"] == 210
    assert max(b - a for a, b in zip(output.video_times, output.video_times[1:])) < 0.06


def test_missing_leading_fragments_move_the_output_to_its_first_frame(recording: bytes, tmp_path: Path) -> None:
    chunks = write_chunks(slice_fragments(recording), tmp_path / "v")

    result = mux([chunks[0]] + chunks[4:], tmp_path)  # chunk 0 has the init and fragment 0: keep a hole after it
    late = mux(write_chunks(slice_timeslice(recording, 10), tmp_path / "t")[:1] + chunks[5:], tmp_path, "late")

    assert result.start_seconds == 0.0 and result.duration_seconds == pytest.approx(10.0, abs=0.05)
    assert late.start_seconds == pytest.approx(5.0, abs=0.05)  # the init chunk held no whole fragment
    assert late.duration_seconds == pytest.approx(5.0, abs=0.05)
    assert min(probe(late.path).video_times) < 0.03


def test_vp9_opus_in_fmp4_from_chromium_becomes_webm(tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=3, video_codec="libvpx-vp9", fmp4=True))  # Chromium's video/mp4

    result = mux(write_chunks(slice_timeslice(data, 3), tmp_path / "v"), tmp_path)

    assert result.format == "webm" and [t.codec for t in result.tracks] == ["vp9", "opus"]
    output = probe(result.path)
    assert output.frames["video"] == 90 and output.duration == pytest.approx(3.0, abs=0.06)


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, extension, method", [("mp4", "mp4", "copy"), (None, "mkv", "copy")])
def test_an_fmp4_participant_end_to_end(api, worker, recording: bytes, source, fmt, extension, method) -> None:
    response = api.start(format=fmt) if fmt else api.start()
    assert response.status_code == 201, response.get_json()
    recording_id = response.get_json()["recordingId"]
    t0 = 1_700_000_000_000.0
    for sequence, piece in enumerate(slice_timeslice(recording, 10)):
        sent = api.put_chunk(recording_id, "sara", "video", sequence, piece, timestamp=t0 + 1000 * sequence)
        assert sent.status_code == 202, sent.get_json()
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id, timeout=90)

    assert body["state"] == "completed", body
    [output] = body["outputs"]
    assert output["key"].endswith(f"/sara.{extension}") and output["format"] == extension
    assert output["method"] == method
    assert {(t["kind"], t["codec"]) for t in output["tracks"]} == {("video", "h264"), ("audio", "aac")}
    path = api.output_path(body, "sara")
    got = probe(path)
    assert sorted(got.codecs) == [("audio", "aac"), ("video", "h264")]
    assert got.frames == source.frames
    assert got.duration == pytest.approx(10.0, abs=0.06) and output["durationSeconds"] == pytest.approx(10.0, abs=0.06)
    assert output["thumbnail"]["width"] == 320 and output["thumbnail"]["height"] == 240
    poster = path.with_name("sara.jpg")
    assert output["thumbnailKey"].endswith("/sara.jpg") and probe(poster).codecs == [("video", "mjpeg")]
    manifest = json.loads(path.with_name("manifest.json").read_text())
    assert manifest["participants"]["sara"]["output"]["format"] == extension


def chunks_bytes(chunks: list[tuple[int, Path]]) -> bytes:
    return b"".join(path.read_bytes() for _, path in chunks)
