"""The muxer's timeline against real media: pauses collapse, restarted timestamps go on from the end,
holes stay holes, and each output says where its first frame was. Every assertion reopens the output."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import Recording, encode_webm, probe, slice_timeslice, write_chunks
from tests.media_layout import header_length
from workers.media.muxer import StreamInput, mux_participant


def test_a_paused_client_plays_on_without_a_frozen_gap(tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=6, pts_gap=(3.0, 10.0)))  # 10 s of nothing after 3 s of media
    chunks = write_chunks(slice_timeslice(data, 6), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks)], tmp_path, "lee")

    assert (result.timestamp_repairs, result.dropped_packets, result.start_seconds) == (1, 0, 0.0)
    assert result.duration_seconds == pytest.approx(6.0, abs=0.05)
    assert_continuous(probe(result.path), seconds=6.0, video_frames=180)


def test_timestamps_restarting_without_a_header_go_on_from_the_end(tmp_path: Path) -> None:
    first, second = encode_webm(Recording(seconds=4)), encode_webm(Recording(seconds=3))
    data = first + second[header_length(second):]  # a reconnect: clusters start at 0 again, no new EBML header
    chunks = write_chunks(slice_timeslice(data, 7), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks)], tmp_path, "max")

    assert (result.segments, result.timestamp_repairs, result.dropped_packets) == (1, 1, 0)
    assert result.duration_seconds == pytest.approx(7.0, abs=0.06)
    assert_continuous(probe(result.path), seconds=7.0, video_frames=210)


def test_a_lone_track_keeps_its_jumps_but_not_its_restarts(tmp_path: Path) -> None:
    still = encode_webm(Recording(seconds=4, audio=False, pts_gap=(2.0, 5.0)))  # a screen share: nothing moved for 5 s
    first, second = encode_webm(Recording(seconds=2, audio=False)), encode_webm(Recording(seconds=2, audio=False))
    restarted = first + second[header_length(second):]

    kept = mux_participant([StreamInput("video", write_chunks(slice_timeslice(still, 4), tmp_path / "s"))], tmp_path, "pat")
    joined = mux_participant([StreamInput("video", write_chunks(slice_timeslice(restarted, 4), tmp_path / "r"))],
                             tmp_path, "quin")

    assert kept.timestamp_repairs == 0 and kept.duration_seconds == pytest.approx(9.0, abs=0.06)
    assert joined.timestamp_repairs == 1 and joined.duration_seconds == pytest.approx(4.0, abs=0.06)


def test_a_pause_where_a_chunk_is_missing_keeps_a_hole_for_that_chunk(tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=8, pts_gap=(4.0, 10.0)))
    chunks = write_chunks(slice_timeslice(data, 8), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks[:4] + chunks[5:])], tmp_path, "ned")

    assert result.timestamp_repairs == 1
    assert result.duration_seconds < 8.5  # the 10 s pause is gone ...
    times = probe(result.path).video_times
    assert 0.5 < max(b - a for a, b in zip(times, times[1:])) < 3.0  # ... the lost chunk's media is still a hole


def test_an_output_starts_at_its_first_frame_and_says_where_that_was(tmp_path: Path) -> None:
    data = encode_webm(Recording(seconds=3, pts_gap=(-1.0, 2.0)))  # the media begins 2 s into the container
    chunks = write_chunks(slice_timeslice(data, 3), tmp_path / "v")

    result = mux_participant([StreamInput("video", chunks)], tmp_path, "olga")

    assert result.start_seconds == pytest.approx(2.0, abs=0.01)  # Opus pre-skip puts audio 6.5 ms earlier
    assert result.duration_seconds == pytest.approx(3.0, abs=0.05)
    output = probe(result.path)
    assert min(output.video_times) < 0.01 and output.frames["video"] == 90


def assert_continuous(output, seconds: float, video_frames: int) -> None:
    """Every frame kept, no frozen stretch, and audio still ending with the video (same shift for both)."""
    times = output.video_times
    assert output.frames["video"] == video_frames
    assert times == sorted(times) and max(b - a for a, b in zip(times, times[1:])) < 0.06
    assert output.duration == pytest.approx(seconds, abs=0.06)
    assert output.ends["audio"] == pytest.approx(output.ends["video"] + 1 / 30, abs=0.05)
