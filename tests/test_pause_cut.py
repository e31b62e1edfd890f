"""The server's cut for clients that keep recording through a pause: which clients are cut and where
(workers/media/cuts.py), the muxer with real WebM, and end to end through HTTP with a real worker in real
time: one file, the paused span absent, timestamps continuous, the media after the pause kept."""
from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.media import WEBM_HEADER, probe, write_chunks
from tests.pause_media import FPS, Phase, decoded_colours, encode_phases, slice_by_time
from workers.media import bridge
from workers.media.cuts import Cut, CutFilter, StreamCuts, chunk_interval_ms, client_spans, segment_cuts
from workers.media.muxer import StreamInput, mux_participant
from workers.records import StoredOutput

T0 = 1_800_000_000_000.0
"""A client clock reading (epoch ms) the unit tests start at."""

PHASES = [Phase("red", 2.0), Phase("blue", 2.0), Phase("green", 2.0)]
"""Before, during and after the pause: blue is what the client recorded while paused."""

TIMESLICE = 0.5


def steady(count: int, step: float = 1000.0, start: float = T0) -> list[tuple[int, float]]:
    return [(seq, start + seq * step) for seq in range(count)]


def test_a_client_that_kept_recording_is_cut_where_the_pause_was() -> None:
    cuts = segment_cuts([(T0 + 3000, T0 + 5500)], steady(10), interval_ms=1000)
    assert cuts == [Cut(3.0, 5.5)]


def test_a_client_that_paused_its_recorder_is_left_alone() -> None:
    stamps = [(0, T0), (1, T0 + 1000), (2, T0 + 2000), (3, T0 + 5600), (4, T0 + 6600)]  # jumps over the pause
    assert segment_cuts([(T0 + 2500, T0 + 5500)], stamps, interval_ms=1000) == []


def test_a_pause_shorter_than_a_chunk_is_told_apart_by_the_jump() -> None:
    kept = segment_cuts([(T0 + 2200, T0 + 2600)], steady(6), interval_ms=1000)
    paused = segment_cuts([(T0 + 2200, T0 + 2600)], [(0, T0), (1, T0 + 1000), (2, T0 + 2000), (3, T0 + 3400)],
                          interval_ms=1000)
    assert kept == [Cut(2.2, 2.6)] and paused == []


def test_no_chunk_after_the_pause_began_means_no_cut() -> None:
    """Stopped while paused with nothing sent since: no evidence of paused media, so real media is kept."""
    assert segment_cuts([(T0 + 5200, T0 + 9000)], steady(6), interval_ms=1000) == []


def test_a_segment_begun_inside_a_pause_loses_only_what_precedes_the_resume() -> None:
    stamps = steady(6, start=T0 + 4000)  # a reload during the pause: a new recorder from T0+4000 on
    assert segment_cuts([(T0 + 3000, T0 + 6000)], stamps, interval_ms=1000, start_seconds=0.1) == [Cut(0.1, 2.1)]


def test_an_open_pause_cuts_to_the_end_and_pauses_before_the_segment_do_nothing() -> None:
    cuts = segment_cuts([(T0 - 9000, T0 - 5000), (T0 + 4000, math.inf)], steady(8), interval_ms=1000)
    assert cuts == [Cut(4.0, math.inf)]


def test_offset_and_spans_move_server_pauses_onto_the_client_clock() -> None:
    assert chunk_interval_ms([(0, 10.0), (1, 510.0), (2, 1010.0), (4, 9000.0)]) == 500.0
    assert client_spans([(100.0, 102.5), (110.0, None), (120.0, 119.0)], offset_ms=-7000.0) == [
        (107000.0, 109500.0), (117000.0, math.inf)]


def test_the_filter_drops_the_cut_shifts_what_follows_and_flags_video_until_a_keyframe() -> None:
    cuts = CutFilter([Cut(2.0, 4.0), Cut(6.0, 7.0)])
    assert cuts.shift(0, 1.9, video=True, keyframe=False) == 0.0 and not cuts.waiting(0)
    assert cuts.shift(0, 2.5, video=True, keyframe=True) is None
    assert cuts.shift(1, 3.9, video=False, keyframe=True) is None
    assert cuts.shift(1, 4.0, video=False, keyframe=True) == 2.0 and not cuts.waiting(1)
    assert cuts.shift(0, 4.04, video=True, keyframe=False) == 2.0 and cuts.waiting(0)  # refers to a cut picture
    assert cuts.shift(0, 4.25, video=True, keyframe=True) == 2.0 and not cuts.waiting(0)
    assert cuts.shift(0, 4.29, video=True, keyframe=False) == 2.0 and not cuts.waiting(0)
    assert cuts.shift(1, 7.5, video=False, keyframe=True) == 3.0
    assert (cuts.dropped, cuts.removed_seconds) == (2, 3.0)


def stream_cuts(chunks, pause: tuple[float, float], client_start: float) -> StreamCuts:
    stamps = {seq: client_start + start * 1000.0 for seq, (start, _) in enumerate(chunks)}
    return StreamCuts(spans=(pause,), stamps=stamps, interval_ms=TIMESLICE * 1000.0)


@pytest.fixture(scope="module")
def chunks() -> list[tuple[float, bytes]]:
    return slice_by_time(encode_phases(PHASES), TIMESLICE)


def assert_cut_output(path: Path, paused: tuple[float, float], tolerance: float) -> None:
    """The output of PHASES with the media in `paused` (seconds of the recording) cut out: its duration,
    continuous timestamps, tracks in line, and the right picture at every time: red until the pause, then
    whatever of the blue the pause did not cover, then green."""
    start, end = paused
    got = probe(path)
    assert abs(got.duration - (6.0 - (end - start))) <= tolerance, (got.duration, paused)
    assert got.decode_errors == 0
    times = sorted(got.video_times)
    assert max(b - a for a, b in zip(times, times[1:])) <= 0.3  # at most a keyframe interval frozen
    assert abs(got.ends["audio"] - got.ends["video"]) <= 0.1  # the tracks still line up
    colours = decoded_colours(path)
    blue = max(0.0, min(4.0, start) - 2.0) + max(0.0, 4.0 - max(2.0, end))  # blue media the pause left
    assert abs([c for _, c in colours].count("blue") / FPS - blue) <= tolerance, (colours, paused)
    assert {c for t, c in colours if t < min(2.0, start) - tolerance} == {"red"}
    assert {c for t, c in colours if t > 2.0 + blue + tolerance} == {"green"}
    assert sum(1 for _, c in colours if c == "green") >= 40  # the media after the pause is there


def test_the_muxer_cuts_the_paused_span_out_of_real_webm(tmp_path: Path, chunks) -> None:
    files = write_chunks([piece for _, piece in chunks], tmp_path / "v")
    cuts = stream_cuts(chunks, (T0 + 2000, T0 + 4000), T0)

    result = mux_participant([StreamInput("video", files, cuts)], tmp_path, "kim")

    assert result.segments == 1 and result.paused_seconds_cut == pytest.approx(2.0, abs=0.01)
    assert_cut_output(result.path, paused=(2.0, 4.0), tolerance=0.1)


def test_video_after_a_cut_is_bridged_to_the_next_keyframe_not_frozen(tmp_path: Path) -> None:
    """Keyframes every 100 frames as browsers send them: the frames between the cut and the next keyframe are
    re-encoded (the first as a keyframe), so the picture after the pause shows at once and decodes cleanly."""
    sparse = slice_by_time(encode_phases(PHASES, keyframe_frames=100), TIMESLICE)  # keyframes at 0 and ~4.17 s
    files = write_chunks([piece for _, piece in sparse], tmp_path / "v")
    cuts = stream_cuts(sparse, (T0 + 2000, T0 + 3500), T0)  # ends 0.67 s before the next keyframe

    result = mux_participant([StreamInput("video", files, cuts)], tmp_path, "kim")

    got = probe(result.path)
    assert got.decode_errors == 0 and abs(got.duration - 4.5) <= 0.1, got.duration
    assert abs(got.ends["audio"] - got.ends["video"]) <= 0.1, got.ends
    times = sorted(got.video_times)
    assert max(b - a for a, b in zip(times, times[1:])) <= 0.1  # no frozen picture after the cut
    colours = decoded_colours(result.path)
    assert {c for t, c in colours if 2.05 <= t <= 2.45} == {"blue"}  # what followed the 1.5 s cut (blue until 4 s)
    assert {c for t, c in colours if t < 1.95} == {"red"} and {c for t, c in colours if t > 2.55} == {"green"}


def test_past_its_frame_budget_the_bridge_holds_the_picture_until_the_keyframe(tmp_path: Path, monkeypatch) -> None:
    """A client that rarely sends keyframes cannot make finalize a transcode: after MAX_BRIDGE_FRAMES the
    picture holds until the client's keyframe (its own frames would not decode after bridged ones)."""
    monkeypatch.setattr(bridge, "MAX_BRIDGE_FRAMES", 4)
    sparse = slice_by_time(encode_phases(PHASES, keyframe_frames=100), TIMESLICE)  # next keyframe at ~4.17 s
    files = write_chunks([piece for _, piece in sparse], tmp_path / "v")

    result = mux_participant([StreamInput("video", files, stream_cuts(sparse, (T0 + 2000, T0 + 3500), T0))],
                             tmp_path, "kim")

    got = probe(result.path)
    assert got.decode_errors == 0 and abs(got.duration - 4.5) <= 0.1, got.duration
    times = sorted(got.video_times)
    assert 0.4 <= max(b - a for a, b in zip(times, times[1:])) <= 0.6  # ~0.67 s after the cut, less 4 frames
    assert {c for t, c in decoded_colours(result.path) if t > 2.7} == {"green"}


def test_without_a_pause_nothing_is_cut(tmp_path: Path, chunks) -> None:
    files = write_chunks([piece for _, piece in chunks], tmp_path / "v")
    result = mux_participant([StreamInput("video", files, StreamCuts((), {}, 500.0))], tmp_path, "kim")
    assert result.duration_seconds == pytest.approx(6.0, abs=0.06) and result.paused_seconds_cut == 0.0


CLIENT_AHEAD_MS = 7_300.0
"""The client's clock runs this far ahead of the server's: the cut is placed by the estimated offset."""


def test_a_client_recording_through_a_pause_gets_one_file_without_it(api, worker, chunks) -> None:
    """In real time: chunks sent as their media ends, pause at 2 s and resume at 4 s of wall time."""
    recording_id = api.start().get_json()["recordingId"]
    host = api.auth()
    began = time.time()
    events = [(start + TIMESLICE, "chunk", seq) for seq, (start, _) in enumerate(chunks)]
    events += [(2.0, "pause", None), (4.0, "resume", None)]
    for at, what, seq in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, began + at - time.time()))
        if what == "chunk":
            start, piece = chunks[seq]
            stamp = (began + start) * 1000.0 + CLIENT_AHEAD_MS
            response = api.put_chunk(recording_id, "alice", "video", seq, piece, timestamp=stamp)
            assert response.status_code == 202, response.get_json()
        else:
            assert api.client.post(f"/video-calls/{api.room}/recording/{what}", headers=host).status_code == 200
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert [o["participantId"] for o in body["outputs"]] == ["alice"]
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    assert len(body["pauses"]) == 1
    assert abs(body["outputs"][0]["pausedSecondsCut"] - 2.0) <= 0.25, body["outputs"]
    stored = StoredOutput.from_json(body["outputs"][0])
    assert stored.to_json()["pausedSecondsCut"] == body["outputs"][0]["pausedSecondsCut"]  # read back the same
    paused = tuple(iso_seconds(body["pauses"][0][k]) - began for k in ("pausedAt", "resumedAt"))
    assert_cut_output(api.output_path(body, "alice"), paused=paused, tolerance=0.25)  # where the server paused


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_declared_last_chunk_does_not_skew_the_clock_offset(api, rec) -> None:
    """The offset estimate places the cut: a final chunk, cut short by stop and sent at once, must not pull it."""
    now_ms = time.time() * 1000.0
    assert api.put_chunk(rec, "alice", "video", 0, WEBM_HEADER, timestamp=now_ms - 60_000).status_code == 202
    before = api.status(rec).get_json()["participants"]["alice"]["clockOffsetSeconds"]
    final = {**api.auth("alice", "participant"), "Content-Type": "application/octet-stream",
             "Tapedeck-Timestamp": str(now_ms), "Tapedeck-Final": "true"}
    url = f"/video-calls/recordings/{rec}/participants/alice/video/chunks/1"
    assert api.client.put(url, data=b"\x01" * 32, headers=final).status_code == 202
    body = api.status(rec).get_json()["participants"]["alice"]
    assert body["video"]["finalSequence"] == 1 and body["clockOffsetSeconds"] == before >= 60.0, body
