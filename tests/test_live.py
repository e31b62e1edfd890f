"""Live finalize (issue 15): chunks folded in while the room records give the batch path's file, packet for
packet, and anything the live path does not handle leaves the participant to batch."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import av
import pytest
from prometheus_client import REGISTRY

from tests.media import Recording, encode_webm, probe, seek_and_decode, slice_timeslice
from tests.media_layout import header_length
from tests.test_live_mp4_output import ffprobe
from workers.live.state import LiveStates
from workers.live.step import LiveFinalizer
from workers.media.muxer import StreamInput, mux_participant
from workers.resources import Resources
from workers.settings import get_settings

CLIP = Recording(seconds=9, keyframe_seconds=1.0)


@pytest.fixture
def live(stack_env, staging_backend) -> LiveFinalizer:
    if staging_backend != "local":
        pytest.skip("live finalize folds chunks on local staging only (object-store staging goes to batch)")
    resources = Resources.build(get_settings())
    return LiveFinalizer(resources.store, resources.staging, LiveStates(resources.redis))


def packets(path: Path) -> list[tuple]:
    """What a player gets from each packet: track, timestamps, size, keyframe flag."""
    with av.open(str(path)) as container:
        kinds = {s.index: s.type for s in container.streams}
        return [(kinds[p.stream_index], p.pts, p.dts, p.size, p.is_keyframe) for p in container.demux() if p.size]


def batch(live: LiveFinalizer, rec: str, out: Path, participant: str = "alice") -> Path:
    chunks = live.store.chunks(rec, participant, "video")
    wanted = [(s, r.name, r.size) for s, r in sorted(chunks.items())]
    paths = live.staging.local_chunks(rec, participant, "video", wanted)
    return mux_participant([StreamInput("video", paths)], out, f"batch-{participant}").path  # type: ignore[arg-type]


def send(api, rec: str, pieces: list[bytes], first: int = 0, participant: str = "alice") -> None:
    for offset, piece in enumerate(pieces):
        assert api.put_chunk(rec, participant, "video", first + offset, piece).status_code == 202


def test_live_steps_then_stop_equal_batch_packet_for_packet(api, rec, live, tmp_path):
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    for start in range(0, 24, 6):  # four steps while recording, each after six more chunks
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and state.windows >= 2 and 0 < state.position < 23
    send(api, rec, pieces[24:], 24)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None
    reference = batch(live, rec, tmp_path)
    assert packets(result.path) == packets(reference)
    assert result.duration_seconds == pytest.approx(probe(reference).container_duration, abs=0.001)
    assert [t.packets for t in result.tracks] == [len([p for p in packets(reference) if p[0] == k])
                                                  for k in ("video", "audio")]
    decoded = probe(result.path)
    assert decoded.decode_errors == 0 and decoded.frames["video"] == 9 * 30
    assert seek_and_decode(result.path, 6.0) == pytest.approx(6.0, abs=0.05)  # Cues point at real Clusters


def test_a_single_step_at_stop_is_the_whole_file(api, rec, live, tmp_path):
    send(api, rec, slice_timeslice(encode_webm(replace(CLIP, seconds=3)), 5))
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and packets(result.path) == packets(batch(live, rec, tmp_path))


def steps(outcome: str) -> float:
    return REGISTRY.get_sample_value("tapedeck_live_steps_total", {"outcome": outcome}) or 0.0


def test_a_hole_at_stop_leaves_the_participant_to_batch(api, rec, live):
    pieces = slice_timeslice(encode_webm(CLIP), 12)
    folded, batched = steps("folded"), steps("batch")
    send(api, rec, pieces[:8])
    live.step(rec)
    send(api, rec, pieces[9:], 9)
    live.step(rec, final=True)
    assert "holes" in live.states.get(rec, "alice").failed
    assert (steps("folded"), steps("batch")) == (folded + 1, batched + 1)  # what the metrics show operators
    assert live.result(rec, "alice", ["video"]) is None


def test_a_restarted_recorder_in_the_tail_is_folded_at_stop(api, rec, live, tmp_path):
    """A new header in the chunks a final step reads: one window per recorder run, the second moved to start where
    the first ended, as batch joins its segments."""
    first = slice_timeslice(encode_webm(CLIP), 6)
    second = slice_timeslice(encode_webm(replace(CLIP, seconds=3)), 2)
    send(api, rec, first + second)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and result.segments == 2
    assert packets(result.path) == packets(batch(live, rec, tmp_path))


def test_a_recorder_restarted_while_recording_is_folded_live(api, rec, live, tmp_path):
    """A browser reload resumed by the browser module: a new header chunk mid-stream. The window before it takes
    the first run to its end; the next begins the second run with its own header, its media moved by where the
    first run's tracks ended less where its own begins (what batch computes for its second segment, known from what
    came before). The output equals batch packet for packet and keeps the first run's track facts."""
    first = slice_timeslice(encode_webm(CLIP), 18)
    second = slice_timeslice(encode_webm(replace(CLIP, seconds=4, width=160, height=120)), 8)
    pieces = first + second
    for start, end in ((0, 8), (8, 21), (21, 26)):
        send(api, rec, pieces[start:end], start)
        live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and state.windows == 3 and state.streams["video"].runs == 2, state
    result, reference = two_runs_equal_batch(live, rec, tmp_path)
    assert seek_and_decode(result.path, 11.0) == seek_and_decode(reference.path, 11.0)  # Cues of the second run


def two_runs_equal_batch(live: LiveFinalizer, rec: str, out: Path):
    """Stop (the final step), then the live output against batch's mux of the same chunks: two recorder runs,
    packet for packet, with batch's track facts and duration. Returns both results."""
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None
    chunks = live.store.chunks(rec, "alice", "video")
    wanted = [(s, r.name, r.size) for s, r in sorted(chunks.items())]
    reference = mux_participant([StreamInput("video", live.staging.local_chunks(rec, "alice", "video", wanted))],
                                out, "batch")
    assert packets(result.path) == packets(reference.path)
    assert (result.segments, [t.to_json() for t in result.tracks]) == (2, [t.to_json() for t in reference.tracks])
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=0.001)
    return result, reference


def test_a_restart_with_other_codecs_goes_to_batch(api, rec, live):
    """A run with another video codec: batch leaves its video out (counted in droppedPackets); the live path does
    not repeat that, and leaves the participant to batch."""
    first = slice_timeslice(encode_webm(CLIP), 12)
    second = slice_timeslice(encode_webm(replace(CLIP, seconds=3, video_codec="libvpx-vp9")), 4)
    send(api, rec, first + second)
    live.step(rec)
    live.step(rec, final=True)
    assert live.states.get(rec, "alice").failed
    assert live.result(rec, "alice", ["video"]) is None


def test_each_participant_is_folded_on_its_own(api, rec, live, tmp_path):
    """Two participants with their own media and chunking: each output equals its own batch file."""
    streams = {"alice": slice_timeslice(encode_webm(CLIP), 18),
               "bob": slice_timeslice(encode_webm(replace(CLIP, seconds=7, width=160, height=120)), 10)}
    for part in range(3):
        for participant, pieces in streams.items():
            third = len(pieces) // 3
            send(api, rec, pieces[part * third:(part + 1) * third if part < 2 else None], part * third, participant)
        live.step(rec)
    live.step(rec, final=True)
    for participant in streams:
        assert live.states.get(rec, participant).windows >= 2
        result = live.result(rec, participant, ["video"])
        assert result is not None
        assert packets(result.path) == packets(batch(live, rec, tmp_path, participant))


def test_a_step_killed_after_appending_is_undone(api, rec, live, tmp_path):
    """A worker killed between appending a window and saving the state leaves bytes the state does not
    count: the next step truncates them, and the output still equals batch."""
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    send(api, rec, pieces[:9])
    live.step(rec)
    state = live.states.get(rec, "alice")
    directory = live.staging.output_dir(rec) / "live"
    for name in ("alice.live.webm", "alice.live.cues"):
        with open(directory / name, "ab") as handle:
            handle.write(b"\x1f\x43\xb6\x75" + b"\x00" * 1000)  # half a Cluster, half a cue point
    assert live.states.get(rec, "alice") == state
    send(api, rec, pieces[9:], 9)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and packets(result.path) == packets(batch(live, rec, tmp_path))
    assert b"\x1f\x43\xb6\x75" + b"\x00" * 1000 not in result.path.read_bytes()


def test_live_files_behind_the_state_are_never_padded(api, rec, live):
    """Files shorter than the state records (another node's, or a disk restored from an older copy) would
    leave a gap of zeros in the output: the participant goes to batch instead."""
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    send(api, rec, pieces[:9])
    live.step(rec)
    path = live.staging.output_dir(rec) / "live" / "alice.live.webm"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)
    send(api, rec, pieces[9:], 9)
    live.step(rec)
    assert "shorter" in live.states.get(rec, "alice").failed


def test_h264_in_matroska_equals_batch(api, rec, live, tmp_path):
    """Chromium's video/webm;codecs=h264 writes Matroska: the live output is .mkv with the same packets."""
    pieces = slice_timeslice(encode_webm(replace(CLIP, video_codec="libx264")), 18)
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and result.path.suffix == ".mkv" and live.states.get(rec, "alice").windows >= 2
    assert packets(result.path) == packets(batch(live, rec, tmp_path))


@pytest.mark.parametrize("codecs, suffix", [(("libx264", "aac"), ".mkv"), (("libvpx-vp9", "libopus"), ".webm")],
                         ids=["safari-h264-aac", "chromium-mp4-vp9-opus"])
def test_fragmented_mp4_equals_batch(api, rec, live, tmp_path, codecs, suffix):
    """Safari's MediaRecorder writes fragmented MP4 (H.264/AAC; Chromium's video/mp4 is VP9/Opus): a window is
    the init segment and the complete moof+mdat fragments from the cursor on, and the live output (.mkv or .webm,
    as batch's) has batch's packets."""
    pieces = slice_timeslice(encode_webm(replace(CLIP, video_codec=codecs[0], audio_codec=codecs[1], fmp4=True)), 18)
    positions = []
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start)
        live.step(rec)
        state = live.states.get(rec, "alice")
        assert state is not None and state.failed is None, state
        positions.append(state.position)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert len(set(positions)) == 3 and live.states.get(rec, "alice").windows >= 3, positions
    assert result is not None and result.path.suffix == suffix
    reference = batch(live, rec, tmp_path)
    assert packets(result.path) == packets(reference)
    assert ffprobe(result.path)["packets"] == ffprobe(reference)["packets"]  # durations, flags and bytes too
    assert result.duration_seconds == pytest.approx(probe(reference).container_duration, abs=0.001)
    assert seek_and_decode(result.path, 6.5) == seek_and_decode(reference, 6.5) > 5  # Cues as batch's


def test_a_first_window_shorter_than_the_look_ahead_reads_past_the_cap(api, rec, live, monkeypatch, tmp_path):
    """Tiny chunks: the capped first window cannot fix the timeline start, so that step reads on; later ones are
    capped again."""
    from workers.live import step as live_step

    monkeypatch.setattr(live_step, "MAX_WINDOW_CHUNKS", 3)  # a third of a second each
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    send(api, rec, pieces[:24])
    live.step(rec)
    first = live.states.get(rec, "alice")
    assert first.failed is None and first.windows == 1 and first.position >= 6
    live.step(rec)
    assert live.states.get(rec, "alice").position <= first.position + 3
    send(api, rec, pieces[24:], 24)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and packets(result.path) == packets(batch(live, rec, tmp_path))


def test_a_stream_counted_from_one_is_folded_too(api, rec, live, tmp_path):
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    for start in range(0, 18, 6):
        send(api, rec, pieces[start:start + 6], start + 1)
        live.step(rec)
    live.step(rec, final=True)
    assert live.states.get(rec, "alice").windows >= 2
    result = live.result(rec, "alice", ["video"])
    assert result is not None and packets(result.path) == packets(batch(live, rec, tmp_path))


def _pause(api, seconds: float, during=None) -> None:
    host = api.auth()
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=host).status_code == 200
    if during:
        during()
    time.sleep(seconds)
    assert api.client.post(f"/video-calls/{api.room}/recording/resume", headers=host).status_code == 200


def test_a_client_that_paused_its_recorder_keeps_its_live_output(api, rec, live, tmp_path):
    """The browser module pauses its MediaRecorder: its timestamps jump over the pause and nothing is cut, so
    the output folded while recording stands."""
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    for sequence, piece in enumerate(pieces[:9]):
        assert api.put_chunk(rec, "alice", "video", sequence, piece, timestamp=time.time() * 1000).status_code == 202
    live.step(rec)
    _pause(api, 2.0)
    for sequence, piece in enumerate(pieces[9:], 9):
        assert api.put_chunk(rec, "alice", "video", sequence, piece, timestamp=time.time() * 1000).status_code == 202
    live.step(rec)
    rec_hash = live.store.get(rec)
    prepared = live.finish(rec_hash, "alice", ["video"])
    assert prepared is not None and packets(prepared.path) == packets(batch(live, rec, tmp_path))


def test_a_client_that_kept_recording_through_a_pause_goes_to_batch(api, rec, live):
    """Its paused media is cut, which only batch does: the live output is not used."""
    pieces = slice_timeslice(encode_webm(CLIP), 18)
    sent = iter(enumerate(pieces))

    def send_some(count: int) -> None:
        for _ in range(count):
            sequence, piece = next(sent)
            assert api.put_chunk(rec, "alice", "video", sequence, piece,
                                 timestamp=time.time() * 1000).status_code == 202
            time.sleep(0.2)

    send_some(8)
    live.step(rec)
    _pause(api, 0.4, during=lambda: send_some(6))
    send_some(4)
    live.step(rec)
    assert live.states.get(rec, "alice").failed is None  # folded on while paused: the cut is decided at stop
    assert live.finish(live.store.get(rec), "alice", ["video"]) is None


def test_an_audio_only_stream_equals_batch_and_seeks(api, rec, live, tmp_path):
    """The browser module's type "audio": Opus only, its Cues (one per Cluster, libavformat's choice) kept."""
    pieces = slice_timeslice(encode_webm(replace(CLIP, video=False, seconds=30)), 30)
    for start in range(0, 30, 10):
        send(api, rec, pieces[start:start + 10], start)
        live.step(rec)
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and live.states.get(rec, "alice").windows >= 2
    assert packets(result.path) == packets(batch(live, rec, tmp_path))
    with av.open(str(result.path)) as container:
        container.seek(20 * av.time_base)
        first = next(p for p in container.demux() if p.size)
        assert 15 <= float(first.pts * first.time_base) <= 20.5


def test_separate_audio_and_video_streams_equal_batch(api, rec, live, tmp_path):
    """A client sending its microphone and camera as two streams: windows end where both have arrived (a time),
    merged as batch merges the streams, and the output equals batch packet for packet."""
    audio = slice_timeslice(encode_webm(replace(CLIP, video=False)), 18)
    video = slice_timeslice(encode_webm(replace(CLIP, audio=False)), 27)
    for step in range(3):
        for sequence in range(step * 6, step * 6 + 6):
            assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
        for sequence in range(step * 8, step * 8 + 8):
            assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
        live.step(rec)
    for sequence in range(24, 27):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    state = live.states.get(rec, "alice")
    assert state.failed is None and state.windows >= 2, state
    live.step(rec, final=True)
    streams = {kind: live.store.chunks(rec, "alice", kind) for kind in ("audio", "video")}
    result = live.result(rec, "alice", list(streams))
    assert result is not None
    inputs = []
    for kind in ("audio", "video"):
        wanted = [(s, r.name, r.size) for s, r in sorted(streams[kind].items())]
        inputs.append(StreamInput(kind, live.staging.local_chunks(rec, "alice", kind, wanted)))
    reference = mux_participant(inputs, tmp_path, "batch")
    assert packets(result.path) == packets(reference.path)
    assert [t.packets for t in result.tracks] == [t.packets for t in reference.tracks]


def two_stream_batch(live: LiveFinalizer, rec: str, out: Path, participant: str = "alice"):
    """Batch's file of a participant's "audio" and "video" streams, merged by time (the reference)."""
    inputs = []
    for kind in ("audio", "video"):
        chunks = live.store.chunks(rec, participant, kind)
        wanted = [(s, r.name, r.size) for s, r in sorted(chunks.items())]
        inputs.append(StreamInput(kind, live.staging.local_chunks(rec, participant, kind, wanted)))
    return mux_participant(inputs, out, f"batch-{participant}")


def test_a_camera_that_starts_after_the_first_window_joins_the_live_output(api, rec, live, tmp_path):
    """Microphone and camera as two streams, the camera's recorder started 5 s in on the same clock: its media
    comes after what was folded, so it joins. Batch puts the video track first: the windows after it are muxed in
    that order and renumbered onto the output's numbers, and the output equals batch packet for packet."""
    live = replace(live, part_size=64 * 1024)  # the output is past one part already: it cannot begin again
    audio = slice_timeslice(encode_webm(replace(CLIP, video=False)), 18)
    video = slice_timeslice(encode_webm(replace(CLIP, audio=False, seconds=4, pts_gap=(0.0, 5.0))), 8)
    for sequence in range(9):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and list(state.streams) == ["audio"] and state.windows == 1
    for sequence in range(9, 14):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    for sequence in range(5):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and list(state.streams) == ["audio", "video"] and state.windows == 2, state
    for sequence in range(14, 18):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    for sequence in range(5, 8):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    live.step(rec, final=True)
    streams = {kind: live.store.chunks(rec, "alice", kind) for kind in ("audio", "video")}
    result = live.result(rec, "alice", list(streams))
    assert result is not None
    reference = two_stream_batch(live, rec, tmp_path)
    assert packets(result.path) == packets(reference.path)
    assert [t.to_json() for t in result.tracks] == [t.to_json() for t in reference.tracks]
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=0.001)
    assert seek_and_decode(result.path, 7.0) == pytest.approx(7.0, abs=0.05)  # the renumbered Cues still point right


def late_audio(api, rec: str, live: LiveFinalizer) -> None:
    """The audio stream's first chunk arrives after the first step, its recorder's clock at 0 like the video's."""
    audio = slice_timeslice(encode_webm(replace(CLIP, video=False)), 18)
    video = slice_timeslice(encode_webm(replace(CLIP, audio=False)), 18)
    for sequence in range(9):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    live.step(rec)
    assert live.states.get(rec, "alice").windows == 1
    for sequence in range(18):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    for sequence in range(9, 18):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    live.step(rec)


def test_a_stream_whose_first_chunk_comes_a_step_late_begins_the_output_again(api, rec, live, tmp_path):
    """Batch merges the late audio's media among what was folded; the output is still shorter than one part (nothing
    hashed or sent ahead), so the live path begins it again with both streams and stays live."""
    late_audio(api, rec, live)
    state = live.states.get(rec, "alice")
    assert state.failed is None and list(state.streams) == ["audio", "video"], state
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["audio", "video"])
    assert result is not None
    assert packets(result.path) == packets(two_stream_batch(live, rec, tmp_path).path)


def test_a_stream_that_starts_later_with_earlier_media_goes_to_batch(api, rec, live):
    """The same, once the output is past one part (parts may have been hashed and sent ahead): batch merges the
    late stream's media among what was folded, so the live path cannot append it."""
    late_audio(api, rec, replace(live, part_size=64 * 1024))
    assert "before what was folded" in live.states.get(rec, "alice").failed


def test_a_restart_without_a_header_where_a_window_begins_is_joined_live(api, rec, live, tmp_path):
    """A reconnect whose timestamps start again at 0 in the same WebM, its first Cluster the first of a window: the
    window's demuxer goes on from the run's clock (the track's last times), so it sees the leap and joins the
    restart where the stream was, as batch's one demuxer does."""
    first, second = encode_webm(replace(CLIP, seconds=4)), encode_webm(replace(CLIP, seconds=6))
    pieces = slice_timeslice(first, 8) + slice_timeslice(second[header_length(second):], 12)
    send(api, rec, pieces[:9])  # the second run's first Cluster is the last one seen: the window ends before it
    live.step(rec)
    assert live.states.get(rec, "alice").windows == 1
    send(api, rec, pieces[9:], 9)
    live.step(rec)
    live.step(rec, final=True)
    assert_equals_batch(live, rec, tmp_path, repairs=1)


def assert_equals_batch(live: LiveFinalizer, rec: str, out: Path, repairs: int) -> None:
    chunks = live.store.chunks(rec, "alice", "video")
    result = live.result(rec, "alice", ["video"])
    assert result is not None, live.states.get(rec, "alice")
    wanted = [(s, r.name, r.size) for s, r in sorted(chunks.items())]
    reference = mux_participant([StreamInput("video", live.staging.local_chunks(rec, "alice", "video", wanted))],
                                out, "batch")
    assert packets(result.path) == packets(reference.path)
    assert (result.timestamp_repairs, reference.timestamp_repairs) == (repairs, repairs)
    assert result.duration_seconds == pytest.approx(reference.duration_seconds, abs=0.001)


@pytest.mark.parametrize("cut", [5, 9], ids=["restart in the second window", "restart in the first window"])
def test_a_restart_without_a_header_inside_a_window_is_joined_live(api, rec, live, tmp_path, cut):
    first, second = encode_webm(replace(CLIP, seconds=4)), encode_webm(replace(CLIP, seconds=6))
    pieces = slice_timeslice(first + second[header_length(second):], 20)
    for start, end in ((0, cut), (cut, 14), (14, 20)):
        send(api, rec, pieces[start:end], start)
        live.step(rec)
    assert live.states.get(rec, "alice").windows >= 2
    live.step(rec, final=True)
    assert_equals_batch(live, rec, tmp_path, repairs=1)


def test_a_pause_the_client_recorded_as_a_jump_is_collapsed_live(api, rec, live, tmp_path):
    """Timestamps that jump 10 s ahead with no media lost (a client that paused its own recorder that way): batch
    collapses the jump, deciding pause or hole from the bytes per second since the run began, which the carried
    clock keeps in the run's byte positions."""
    pieces = slice_timeslice(encode_webm(replace(CLIP, seconds=8, pts_gap=(4.0, 10.0))), 16)
    for start, end in ((0, 6), (6, 11), (11, 16)):
        send(api, rec, pieces[start:end], start)
        live.step(rec)
    live.step(rec, final=True)
    assert_equals_batch(live, rec, tmp_path, repairs=1)
