"""The poster taken while recording (issue 15): once the live output holds video past the thumbnail offset, a
step takes the frame batch would take from the finished file, keeps it next to the output and records it in the
live state; stop reuses it, and makes it from the closed file only when the recording is shorter than the offset
or the kept JPEG is gone or damaged."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import av
import pytest

from tests.media import Recording, encode_webm, slice_timeslice
from tests.test_live_flow import live_api, live_env, record, resources  # noqa: F401 - the flow test's own fixtures
from workers.live.state import LiveStates
from workers.live.step import LiveFinalizer
from workers.media.muxer import StreamInput
from workers.outputs import poster_or_none, prepare_output
from workers.resources import Resources
from workers.settings import get_settings

CLIP = Recording(seconds=9, keyframe_seconds=1.0)
OFFSET = 4.5
"""Between two keyframes, so the frame is decoded from the keyframe before it."""


@pytest.fixture
def live(stack_env, staging_backend) -> LiveFinalizer:
    if staging_backend != "local":
        pytest.skip("live finalize folds chunks on local staging only (object-store staging goes to batch)")
    resources = Resources.build(get_settings())
    return LiveFinalizer(resources.store, resources.staging, LiveStates(resources.redis), thumbnail_offset=OFFSET,
                         thumbnail_width=160)


def send(api, rec: str, pieces: list[bytes], first: int = 0) -> None:
    for offset, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", first + offset, piece).status_code == 202


def finish(live: LiveFinalizer, rec: str):
    return live.finish(live.store.get(rec), "alice", ["video"])


def batch(live: LiveFinalizer, rec: str, out: Path):
    chunks = live.store.chunks(rec, "alice", "video")
    paths = live.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in sorted(chunks.items())])
    out.mkdir(parents=True, exist_ok=True)
    return prepare_output([StreamInput("video", paths)], out, "alice", "webm", mp4=live.mp4,  # type: ignore[arg-type]
                          thumbnail_offset=live.thumbnail_offset, thumbnail_width=live.thumbnail_width)


def picture(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return list(bytes(frame.reformat(format="gray").planes[0]))


def mean_difference(a: Path, b: Path) -> float:
    pixels_a, pixels_b = picture(a), picture(b)
    assert len(pixels_a) == len(pixels_b)
    return sum(abs(x - y) for x, y in zip(pixels_a, pixels_b)) / len(pixels_a)


def test_the_poster_is_taken_while_recording_and_equals_batch(api, rec, live, tmp_path):
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    send(api, rec, pieces[:9])  # three seconds: not past the offset yet
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.windows == 1 and state.end_seconds < OFFSET and state.poster is None
    send(api, rec, pieces[9:15], 9)
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.end_seconds > OFFSET and state.poster is not None  # before stop
    assert (state.poster["offset"], state.poster["maxWidth"]) == (OFFSET, 160)
    kept = live._file(rec, "alice", "webm").poster  # noqa: SLF001
    taken = kept.read_bytes()
    send(api, rec, pieces[15:], 15)
    live.step(rec)
    output = finish(live, rec)
    assert output is not None and output.thumbnail is not None
    assert output.thumbnail.path == kept and kept.read_bytes() == taken  # reused, not made again
    reference = batch(live, rec, tmp_path / "batch")
    assert reference.thumbnail is not None
    assert (output.thumbnail.width, output.thumbnail.height, output.thumbnail.seconds) == \
        (reference.thumbnail.width, reference.thumbnail.height, reference.thumbnail.seconds)
    assert output.thumbnail.seconds == pytest.approx(OFFSET, abs=1 / 30)  # the frame at the offset, not a keyframe
    assert kept.read_bytes() == reference.thumbnail.path.read_bytes()  # the same frame, the same JPEG
    assert mean_difference(kept, reference.thumbnail.path) == 0


def test_a_recording_shorter_than_the_offset_gets_its_poster_at_stop(api, rec, live, tmp_path):
    pieces = slice_timeslice(encode_webm(replace(CLIP, seconds=4)), 12)
    send(api, rec, pieces[:9])
    live.step(rec)
    send(api, rec, pieces[9:], 9)
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.windows >= 1 and state.poster is None
    output = finish(live, rec)
    reference = batch(live, rec, tmp_path / "batch")
    assert output is not None and output.thumbnail is not None and reference.thumbnail is not None
    assert output.thumbnail.seconds == reference.thumbnail.seconds == pytest.approx(2.0, abs=1 / 30)  # the middle
    assert output.thumbnail.path.read_bytes() == reference.thumbnail.path.read_bytes()


@pytest.mark.parametrize("damage", ["missing", "truncated", "other"])
def test_a_lost_or_damaged_poster_is_made_again_at_stop(api, rec, live, tmp_path, damage):
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    send(api, rec, pieces[:18])
    live.step(rec)
    assert live.states.get(rec, "alice").poster is not None
    kept = live._file(rec, "alice", "webm").poster  # noqa: SLF001
    taken = kept.read_bytes()
    if damage == "missing":
        kept.unlink()
    elif damage == "truncated":  # as a write cut short would leave it, were it not renamed into place
        kept.write_bytes(taken[:len(taken) // 2])
    else:  # the same size, another picture's bytes
        kept.write_bytes(taken[:-100] + bytes(100))
    send(api, rec, pieces[18:], 18)
    output = finish(live, rec)
    reference = batch(live, rec, tmp_path / "batch")
    assert output is not None and output.thumbnail is not None and reference.thumbnail is not None
    assert output.thumbnail.path != kept
    assert output.thumbnail.path.read_bytes() == reference.thumbnail.path.read_bytes() == taken


def test_an_audio_only_output_takes_no_poster(api, rec, live):
    pieces = slice_timeslice(encode_webm(replace(CLIP, video=False)), 9)
    send(api, rec, pieces)
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.windows >= 1 and state.end_seconds > OFFSET and state.poster is None
    output = finish(live, rec)
    assert output is not None and output.thumbnail is None


class Killed(BaseException):
    """A worker killed where this is raised: nothing after it runs."""


def test_a_step_killed_while_writing_the_poster_leaves_nothing_stop_reuses(api, rec, live, tmp_path, monkeypatch):
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    send(api, rec, pieces[:18])

    def killed(*_args):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr("workers.media.thumbnail.os.replace", killed)  # the JPEG written, not yet renamed into place
        with pytest.raises(Killed):
            live.step(rec)
    kept = live._file(rec, "alice", "webm").poster  # noqa: SLF001
    assert not kept.exists() and live.states.get(rec, "alice").poster is None
    send(api, rec, pieces[18:], 18)
    output = finish(live, rec)
    reference = batch(live, rec, tmp_path / "batch")
    assert output is not None and output.thumbnail is not None and reference.thumbnail is not None
    assert output.thumbnail.path.read_bytes() == reference.thumbnail.path.read_bytes()


def test_a_transcoded_mp4_takes_its_poster_while_recording_too(api, live, tmp_path):
    """`format: mp4`: the poster comes from the live H.264 output, whose packets the MP4 copies, so it is the JPEG
    stop would make from the live MP4; batch's MP4 is another encode of the same frames, so its poster is the same
    source frame, its pixels within the encoder's noise."""
    response = api.start(format="mp4")
    assert response.status_code == 201
    rec = response.get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(replace(CLIP, keyframe_seconds=3.0)), 27)
    send(api, rec, pieces[:18])
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.transcode is not None and state.poster is not None  # before stop
    kept = live._file(rec, "alice", "mkv").poster  # noqa: SLF001
    taken = kept.read_bytes()
    send(api, rec, pieces[18:], 18)
    output = finish(live, rec)
    assert output is not None and output.format == "mp4" and output.thumbnail is not None
    assert output.thumbnail.path == kept and kept.read_bytes() == taken
    made_at_stop = poster_or_none(output.path, tmp_path / "stop.jpg", OFFSET, 160)
    assert made_at_stop is not None and made_at_stop.path.read_bytes() == taken  # what stop made before
    chunks = live.store.chunks(rec, "alice", "video")
    paths = live.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in sorted(chunks.items())])
    (tmp_path / "batch").mkdir()
    reference = prepare_output([StreamInput("video", paths)], tmp_path / "batch", "alice", "mp4", mp4=live.mp4,
                               thumbnail_offset=OFFSET, thumbnail_width=160)
    assert reference.thumbnail is not None
    assert (output.thumbnail.width, output.thumbnail.height, output.thumbnail.seconds) == \
        (reference.thumbnail.width, reference.thumbnail.height, reference.thumbnail.seconds)
    assert mean_difference(kept, reference.thumbnail.path) < 2  # of 255: two H.264 encodes of one frame


def test_a_camera_that_joins_later_gets_batch_poster(api, rec, live, tmp_path):
    """Microphone first, the camera's stream joining 5 s in (tests/test_live.py's case): the poster waits for
    video, and is the frame batch takes from both streams (the first video frame, at 5 s, past the offset)."""
    live = replace(live, part_size=64 * 1024)  # past one part: the camera joins the output, no new beginning
    audio = slice_timeslice(encode_webm(replace(CLIP, video=False)), 18)
    video = slice_timeslice(encode_webm(replace(CLIP, audio=False, seconds=4, pts_gap=(0.0, 5.0))), 8)
    for sequence in range(9):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    live.step(rec)
    assert live.states.get(rec, "alice").poster is None  # no video yet
    for sequence in range(9, 14):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    for sequence in range(5):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    live.step(rec)
    state = live.states.get(rec, "alice")
    assert list(state.streams) == ["audio", "video"] and state.poster is not None
    for sequence in range(14, 18):
        assert api.put_chunk(rec, "alice", "audio", sequence, audio[sequence]).status_code == 202
    for sequence in range(5, 8):
        assert api.put_chunk(rec, "alice", "video", sequence, video[sequence]).status_code == 202
    output = live.finish(live.store.get(rec), "alice", ["audio", "video"])
    inputs = []
    for kind in ("audio", "video"):
        chunks = live.store.chunks(rec, "alice", kind)
        inputs.append(StreamInput(kind, live.staging.local_chunks(  # type: ignore[arg-type]
            rec, "alice", kind, [(s, r.name, r.size) for s, r in sorted(chunks.items())])))
    (tmp_path / "batch").mkdir()
    reference = prepare_output(inputs, tmp_path / "batch", "alice", "webm", mp4=live.mp4, thumbnail_offset=OFFSET,
                               thumbnail_width=160)
    assert output is not None and output.thumbnail is not None and reference.thumbnail is not None
    assert output.thumbnail.path == live._file(rec, "alice", "webm").poster  # noqa: SLF001 - taken live
    assert output.thumbnail.seconds == reference.thumbnail.seconds == pytest.approx(5.0, abs=1 / 30)
    assert output.thumbnail.path.read_bytes() == reference.thumbnail.path.read_bytes()


def test_finalize_uploads_the_poster_taken_while_recording(live_env, resources, live_api, tmp_path):  # noqa: F811
    """Through the API and finalize (steps as tapedeck.live_step runs them): the poster is in the live state before
    stop, and the JPEG stored beside the output is batch's."""
    rec, _pieces = record(live_api, resources, 8, 3)
    poster = resources.finalizer.live.states.get(rec, "alice").poster
    assert poster is not None and poster["offset"] == resources.settings.thumbnail_offset_seconds
    assert live_api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    output = live_api.status(rec).get_json()["outputs"][0]
    stored = resources.provider.path_for(output["thumbnailKey"])  # type: ignore[attr-defined]
    chunks = sorted(resources.store.chunks(rec, "alice", "video").items())
    paths = resources.staging.local_chunks(rec, "alice", "video", [(s, r.name, r.size) for s, r in chunks])
    settings = resources.settings
    reference = prepare_output([StreamInput("video", paths)], tmp_path, "alice", "webm",  # type: ignore[arg-type]
                               mp4=settings.mp4, thumbnail_offset=settings.thumbnail_offset_seconds,
                               thumbnail_width=settings.thumbnail_width)
    assert reference.thumbnail is not None
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == poster["sha256"]  # the one taken while recording
    assert stored.read_bytes() == reference.thumbnail.path.read_bytes()
    assert output["thumbnail"] == {"width": poster["width"], "height": poster["height"], "atSeconds": poster["seconds"]}


def test_a_poster_that_fails_to_be_written_holds_back_no_step(api, rec, live, monkeypatch):
    """The poster is optional: an unexpected error while taking it (here the JPEG writer raising what PyAV raises,
    a ValueError) neither stops this participant's live output from advancing nor the next participant's step."""
    import workers.media.thumbnail as thumbnail

    def broken_writer(image, target):  # noqa: ANN001, ARG001
        raise ValueError("encoder refused the picture")

    monkeypatch.setattr(thumbnail, "_write_jpeg", broken_writer)
    pieces = slice_timeslice(encode_webm(CLIP), 27)
    for sequence, piece in enumerate(pieces[:18]):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        assert api.put_chunk(rec, "bob", "video", sequence, piece).status_code == 202
    live.step(rec)
    for participant in ("alice", "bob"):
        state = live.states.get(rec, participant)
        assert state is not None and state.end_seconds > OFFSET and state.poster is None
