"""The remux against real media: PyAV encodes recordings as a browser would, the muxer joins the chunks,
and every assertion reopens the output and decodes it. Pauses and timestamp repairs: test_muxer_timeline.py."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tests.media import Recording, encode_webm, probe, seek_and_decode, slice_timeslice, write_chunks
from tests.media_layout import block_timecodes, segment_children
from workers.media.chunk_stream import ChunkStream, split_segments
from workers.media.container import EBML_MAGIC, Container
from workers.media.errors import MediaError
from workers.media.muxer import StreamInput, mux_participant, output_format_for

TEN_SECONDS = Recording(seconds=10)


@pytest.fixture(scope="module")
def recording() -> bytes:
    """10 s of VP8+Opus, live WebM, keyframe every second."""
    return encode_webm(TEN_SECONDS)


@pytest.fixture
def chunks(recording: bytes, tmp_path: Path) -> list[tuple[int, Path]]:
    """The recording cut like a 1 s timeslice: 10 chunks, not aligned to clusters."""
    return write_chunks(slice_timeslice(recording, 10), tmp_path / "video")


@pytest.fixture
def source(recording: bytes, tmp_path: Path):
    """The uncut recording on disk, decoded once for comparison."""
    path = tmp_path / "source.webm"
    path.write_bytes(recording)
    return probe(path)


# --- ChunkStream -------------------------------------------------------------------------------


def test_chunk_stream_reads_across_files_and_seeks(tmp_path: Path) -> None:
    pieces = [b"abc", b"", b"defgh", b"i", b"", b"jklmnop"]
    paths = [path for _, path in write_chunks(pieces, tmp_path)]
    whole = b"".join(pieces)
    with ChunkStream(paths) as stream:
        assert stream.size == len(whole)
        assert stream.read() == whole
        assert stream.read(10) == b""
        for start in range(len(whole) + 1):
            stream.seek(start)
            buffer = bytearray(4)
            filled = stream.readinto(buffer)  # fills across file boundaries
            assert bytes(buffer[:filled]) == whole[start : start + 4]
            stream.seek(start)
            piece = stream.read(4)  # may stop at a file's end, like any raw read
            assert piece == whole[start : start + len(piece)] and (piece or start == len(whole))
        assert stream.seek(-3, io.SEEK_END) == len(whole) - 3
        assert stream.read(2) == b"no" and stream.tell() == len(whole) - 1
        with io.BufferedReader(ChunkStream(paths)) as buffered:
            assert buffered.read() == whole
        assert stream.seek(-5, io.SEEK_CUR) == len(whole) - 6
        buffer = bytearray(100)
        assert stream.readinto(buffer) == 6 and bytes(buffer[:6]) == whole[-6:]
        assert stream.seekable() and stream.readable() and not stream.writable()
    with pytest.raises(ValueError):
        stream.read(1)


def test_split_segments_at_each_header_and_drops_what_precedes_the_first(tmp_path: Path) -> None:
    pieces = [b"mid1", b"mid2", EBML_MAGIC + b"a", b"x", EBML_MAGIC + b"b", b"y", b"z"]
    chunks = write_chunks(pieces, tmp_path, first_sequence=3)
    plan = split_segments(chunks)
    assert plan.dropped == [3, 4]
    assert [[sequence for sequence, _ in segment] for segment in plan.segments] == [[5, 6], [7, 8, 9]]
    assert plan.containers == [Container.MATROSKA, Container.MATROSKA]  # sniffed here, not again by the demuxer


def test_each_segment_keeps_the_container_its_header_starts(tmp_path: Path) -> None:
    ftyp = (16).to_bytes(4, "big") + b"ftypisom" + b"\0" * 4
    chunks = write_chunks([EBML_MAGIC + b"a", b"x", ftyp, b"moof"], tmp_path)
    assert split_segments(chunks).containers == [Container.MATROSKA, Container.MP4]


# --- muxer -------------------------------------------------------------------------------------


def test_output_format_is_webm_only_for_webm_codecs() -> None:
    assert output_format_for(["vp8", "opus"]) == "webm"
    assert output_format_for(["vp9", "av1", "vorbis"]) == "webm"
    assert output_format_for(["h264", "opus"]) == "matroska"


def test_in_order_remux_keeps_every_frame_and_becomes_seekable(chunks, source, tmp_path: Path) -> None:
    reports: list[float] = []
    result = mux_participant([StreamInput("video", chunks)], tmp_path / "out", "alice", reports.append)

    assert result.path == tmp_path / "out" / "alice.webm" and result.format == "webm"
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["alice.webm"]  # no .part left
    output = probe(result.path)
    for kind in ("video", "audio"):
        assert abs(output.frames[kind] - source.frames[kind]) <= 1
    assert abs(output.duration - source.duration) < 0.05
    assert source.container_duration is None and "Cues" not in segment_children(chunks_bytes(chunks))[1]
    assert output.container_duration == pytest.approx(10.0, abs=0.05)
    assert result.duration_seconds == pytest.approx(output.container_duration)
    assert "Cues" in segment_children(result.path.read_bytes())[1]
    landed = seek_and_decode(result.path, 5.0)
    assert landed is not None and 4.0 <= landed <= 5.05  # the keyframe at or before 5 s
    assert [(t.media_type, t.codec, t.source) for t in result.tracks] == [("video", "vp8", "video"), ("audio", "opus", "video")]
    assert result.tracks[0].width == 320 and result.tracks[0].height == 240
    assert (result.segments, result.dropped_chunks, result.dropped_packets) == (1, [], 0)
    assert (result.start_seconds, result.timestamp_repairs) == (0.0, 0)
    assert reports == sorted(reports) and reports[-1] == 1.0 and len(reports) <= 101


def test_separate_audio_and_video_streams_merge_into_one_file(tmp_path: Path) -> None:
    audio = write_chunks(slice_timeslice(encode_webm(Recording(seconds=6, video=False)), 6), tmp_path / "a")
    video = write_chunks(slice_timeslice(encode_webm(Recording(seconds=6, audio=False)), 6), tmp_path / "v")

    result = mux_participant([StreamInput("video", video), StreamInput("audio", audio)], tmp_path, "bob")

    output = probe(result.path)
    assert output.codecs == [("video", "vp8"), ("audio", "opus")]
    assert output.frames["video"] == 180 and output.frames["audio"] >= 300
    assert [t.source for t in result.tracks] == ["video", "audio"]
    assert result.duration_seconds == pytest.approx(6.0, abs=0.05)
    assert seek_and_decode(result.path, 3.0) is not None


def test_the_audio_streams_track_comes_first_among_audio_tracks(chunks, tmp_path: Path) -> None:
    audio = write_chunks(slice_timeslice(encode_webm(Recording(seconds=4, video=False)), 4), tmp_path / "a")

    result = mux_participant([StreamInput("video", chunks), StreamInput("audio", audio)], tmp_path, "carol")

    assert [(t.media_type, t.source) for t in result.tracks] == [("video", "video"), ("audio", "audio"), ("audio", "video")]
    output = probe(result.path)
    assert output.codecs == [("video", "vp8"), ("audio", "opus"), ("audio", "opus")]
    four_seconds, ten_seconds = output.stream_frames[1], output.stream_frames[2]
    assert four_seconds == pytest.approx(200, abs=2) and ten_seconds == pytest.approx(500, abs=2)


def test_a_missing_middle_chunk_costs_only_its_media(chunks, source, tmp_path: Path) -> None:
    result = mux_participant([StreamInput("video", chunks[:4] + chunks[5:])], tmp_path, "dave")

    output = probe(result.path)
    lost = source.frames["video"] - output.frames["video"]
    assert 0 < lost <= 2.5 * TEN_SECONDS.fps  # about the chunk plus the rest of its cluster
    assert output.frames["audio"] >= source.frames["audio"] - 2.5 * 50
    assert max(output.video_times) >= 9.9  # demuxing went on after the hole
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)  # the hole stays a hole in time
    assert result.timestamp_repairs == 0
    assert seek_and_decode(result.path, 8.0) is not None


def test_several_missing_chunks_stay_a_hole_in_time(chunks, source, tmp_path: Path) -> None:
    result = mux_participant([StreamInput("video", chunks[:3] + chunks[6:])], tmp_path, "dora")

    output = probe(result.path)
    assert result.timestamp_repairs == 0 and result.duration_seconds == pytest.approx(10.0, abs=0.05)
    assert 3.0 <= max(b - a for a, b in zip(output.video_times, output.video_times[1:])) <= 5.0
    assert output.frames["video"] >= source.frames["video"] - 4.5 * TEN_SECONDS.fps


def test_a_garbage_chunk_in_the_middle_does_not_stop_the_remux(chunks, source, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.chunk"
    garbage.write_bytes(os.urandom(chunks[5][1].stat().st_size))
    damaged = [*chunks[:5], (5, garbage), *chunks[6:]]

    result = mux_participant([StreamInput("video", damaged)], tmp_path, "erin")

    output = probe(result.path)
    assert output.frames["video"] >= source.frames["video"] - 2.5 * TEN_SECONDS.fps
    assert output.frames["audio"] >= source.frames["audio"] - 2.5 * 50
    assert max(output.video_times) >= 9.9
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)
    assert result.timestamp_repairs == 0  # the skipped bytes explain the jump: a hole, not a pause


@pytest.mark.parametrize("timecode", [30_000, -3_000])  # 30 s ahead, 3 s back
def test_one_corrupt_timestamp_costs_one_packet_not_the_rest(recording: bytes, source, tmp_path: Path,
                                                            timecode: int) -> None:
    data = bytearray(recording)
    audio_blocks = [offset for offset, track in block_timecodes(recording) if track == 1]  # audio is track 1
    offset = audio_blocks[len(audio_blocks) // 2]
    data[offset : offset + 2] = timecode.to_bytes(2, "big", signed=True)  # this block's time, relative to its cluster
    chunks = write_chunks(slice_timeslice(bytes(data), 10), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks)], tmp_path, "fred")

    assert result.dropped_packets == 1 and result.timestamp_repairs == 0
    assert result.duration_seconds == pytest.approx(10.0, abs=0.05)
    output = probe(result.path)
    assert output.frames == {"video": source.frames["video"], "audio": source.frames["audio"] - 1}


def test_a_missing_header_chunk_is_a_clear_media_error(chunks, tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        mux_participant([StreamInput("video", chunks[1:])], tmp_path, "frank")
    assert caught.value.message.startswith("header chunk (sequence 0) is missing for video stream;")
    assert "chunks 1-9" in caught.value.message
    assert not list(tmp_path.glob("frank*"))


def test_a_header_chunk_without_media_is_a_media_error(tmp_path: Path) -> None:
    chunks = write_chunks([EBML_MAGIC + os.urandom(2000), os.urandom(2000)], tmp_path / "v")
    with pytest.raises(MediaError, match="video stream"):
        mux_participant([StreamInput("video", chunks)], tmp_path, "gina")
    assert not list(tmp_path.glob("gina*"))


def test_a_restarted_recorder_joins_into_one_continuous_file(recording: bytes, tmp_path: Path) -> None:
    first = write_chunks(slice_timeslice(recording, 10), tmp_path / "v")
    second = write_chunks(slice_timeslice(encode_webm(Recording(seconds=4)), 4), tmp_path / "v", first_sequence=10)

    result = mux_participant([StreamInput("video", first + second)], tmp_path, "hank")

    assert result.segments == 2 and result.dropped_chunks == [] and result.dropped_packets == 0
    assert result.duration_seconds == pytest.approx(14.0, abs=0.1)
    output = probe(result.path)
    assert output.frames["video"] == 14 * TEN_SECONDS.fps
    times = output.video_times
    assert times == sorted(times)
    assert max(b - a for a, b in zip(times, times[1:])) < 0.05  # no gap and no overlap at the join
    landed = seek_and_decode(result.path, 12.0)
    assert landed is not None and 10.9 <= landed <= 12.05


def test_chunks_before_a_restart_without_their_header_are_reported_dropped(recording: bytes, tmp_path: Path) -> None:
    first = write_chunks(slice_timeslice(recording, 10), tmp_path / "v")[1:]  # sequence 0 never arrived
    second = write_chunks(slice_timeslice(encode_webm(Recording(seconds=3)), 3), tmp_path / "v", first_sequence=10)

    result = mux_participant([StreamInput("video", first + second)], tmp_path, "ivy")

    assert result.dropped_chunks == list(range(1, 10))
    assert result.duration_seconds == pytest.approx(3.0, abs=0.05)



def test_a_restart_with_other_codecs_is_reported_not_silently_lost(recording: bytes, tmp_path: Path) -> None:
    """Found from outside: a recorder restarted with other codecs (VP8/Opus, then H.264/Opus from another
    browser) was muxed as if its second segment never existed: no dropped chunk, no dropped packet, 'segments: 2'.
    The output keeps the first codecs; the media it cannot hold is reported (here: its chunks, as missing)."""
    first = write_chunks(slice_timeslice(recording, 10), tmp_path / "v")
    h264 = encode_webm(Recording(seconds=3, video_codec="libx264"))
    second = write_chunks(slice_timeslice(h264, 3), tmp_path / "v", first_sequence=10)

    result = mux_participant([StreamInput("video", first + second)], tmp_path, "kim")

    assert [t.codec for t in result.tracks] == ["vp8", "opus"]
    assert result.duration_seconds == pytest.approx(13.0, abs=0.1)  # the Opus track of the restart is kept
    assert result.dropped_packets >= 90  # the 90 H.264 frames it cannot hold, counted
    assert probe(result.path).frames["video"] == 10 * TEN_SECONDS.fps


def test_a_restart_sharing_no_track_is_reported_as_missing_chunks(recording: bytes, tmp_path: Path) -> None:
    first = write_chunks(slice_timeslice(recording, 10), tmp_path / "v")
    other = encode_webm(Recording(seconds=3, video_codec="libx264", audio=False))
    second = write_chunks(slice_timeslice(other, 3), tmp_path / "v", first_sequence=10)

    result = mux_participant([StreamInput("video", first + second)], tmp_path, "lou")

    assert result.dropped_chunks == [10, 11, 12]  # status and manifest list them as missing
    assert result.duration_seconds == pytest.approx(10.0, abs=0.1)

def test_h264_from_chromium_goes_to_matroska(tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=3, video_codec="libx264"))
    chunks = write_chunks(slice_timeslice(data, 3), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks)], tmp_path, "jack")

    assert result.format == "matroska" and result.path.name == "jack.mkv"
    assert [t.codec for t in result.tracks] == ["h264", "opus"]
    output = probe(result.path)
    assert output.frames["video"] == 90 and output.container_duration == pytest.approx(3.0, abs=0.05)


def chunks_bytes(chunks: list[tuple[int, Path]]) -> bytes:
    return b"".join(path.read_bytes() for _, path in chunks)


# --- codecs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder, codec", [("libvpx-vp9", "vp9"), ("libsvtav1", "av1")])
def test_vp9_and_av1_with_opus_stay_webm(encoder: str, codec: str, tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=3, video_codec=encoder))
    source = probe(save(data, tmp_path / "source.webm"))

    result = mux_participant([StreamInput("video", write_chunks(slice_timeslice(data, 3), tmp_path / "v"))],
                             tmp_path / "out", "kim")

    assert result.format == "webm" and result.path.name == "kim.webm"
    assert [(t.media_type, t.codec) for t in result.tracks] == [("video", codec), ("audio", "opus")]
    output = probe(result.path)
    assert output.codecs == [("video", codec), ("audio", "opus")]
    assert output.frames == source.frames == {"video": 90, "audio": 151} and output.decode_errors == 0
    assert output.duration == pytest.approx(source.duration, abs=0.01)
    assert result.duration_seconds == pytest.approx(3.0, abs=0.05)
    assert (result.start_seconds, result.timestamp_repairs, result.dropped_packets) == (0.0, 0, 0)
    assert seek_and_decode(result.path, 2.0) is not None


def save(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path
