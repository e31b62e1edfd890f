"""Live windows of fragmented MP4 (Safari's MediaRecorder): the init segment's length, the complete fragments in
a stream's bytes cut anywhere, and what a window made of them demuxes to."""
from __future__ import annotations

import io
import struct

import av
import pytest

from tests.media import Recording, encode_fmp4, slice_timeslice
from tests.test_live import batch, live, packets, send, two_runs_equal_batch  # noqa: F401 - live: the fixture
from workers.live import source
from workers.live.source import FRAGMENTED, MATROSKA, NotYet, Unsupported, init_length, layout_of, scan_fragments

DATA = encode_fmp4(Recording(seconds=4, keyframe_seconds=0.5))


def boxes(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of every top-level box."""
    found, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        found.append((offset, size, kind))
        offset += size
    return found


def demuxed(data: bytes) -> list[tuple]:
    with av.open(io.BytesIO(data)) as container:
        return [(p.stream.type, p.pts, p.dts, p.size, p.is_keyframe, bytes(p)) for p in container.demux() if p.size]


INIT = next(offset for offset, _, kind in boxes(DATA) if kind == b"moof")
ENDS = [offset + size for offset, size, kind in boxes(DATA) if kind == b"mdat"]


def test_the_init_segment_is_everything_before_the_first_fragment():
    assert init_length(io.BytesIO(DATA)) == INIT
    assert [kind for _, _, kind in boxes(DATA[:INIT])] == [b"ftyp", b"moov"]
    assert layout_of(io.BytesIO(DATA)) is FRAGMENTED
    with pytest.raises(NotYet):  # the moov not all there yet: no fragment seen
        init_length(io.BytesIO(DATA[:INIT - 10]))


@pytest.mark.parametrize("bad", [
    pytest.param(lambda d: d[INIT:], id="no ftyp first"),
    pytest.param(lambda d: d[:INIT] + struct.pack(">I4s", 16, b"mdat") + bytes(8) + d[INIT:], id="mdat before moof"),
    pytest.param(lambda d: d[:28] + struct.pack(">I4s", 0, b"moov") + d[28:], id="box to the end of the file"),
])
def test_an_init_segment_no_browser_writes_is_left_to_batch(bad):
    with pytest.raises(Unsupported):
        init_length(io.BytesIO(bad(DATA)))


def test_an_init_segment_over_the_bound_is_left_to_batch(monkeypatch):
    monkeypatch.setattr(source, "MAX_HEADER_BYTES", INIT - 1)
    with pytest.raises(Unsupported):
        init_length(io.BytesIO(DATA))


def test_a_fragment_counts_once_its_mdat_has_ended_and_a_window_of_them_demuxes_as_the_whole():
    whole = demuxed(DATA)
    assert len(ENDS) >= 6
    for limit in sorted({INIT, *ENDS, *(end - 1 for end in ENDS), *(end + 9 for end in ENDS[:-1]), len(DATA)}):
        scan = scan_fragments(io.BytesIO(DATA), INIT, limit)
        expected = max([INIT] + [end for end in ENDS if end <= limit])
        assert scan.end == expected, limit
        assert scan.times == [] and all(DATA[at + 4:at + 8] == b"moof" for at in scan.clusters)
        if scan.end > INIT:  # init + the complete fragments: the whole stream's first packets, exactly
            prefix = demuxed(DATA[:scan.end])
            assert demuxed(DATA[:INIT] + DATA[INIT:scan.end]) == prefix == whole[:len(prefix)]
    middle = ENDS[2]  # a window from a later fragment on: the same packets as the whole stream there
    tail = demuxed(DATA[:INIT] + DATA[middle:])
    assert tail == whole[len(whole) - len(tail):] and len(tail) < len(whole)


def test_boxes_between_fragments_are_stepped_over_and_unknown_ones_refused():
    styp = struct.pack(">I4s", 16, b"styp") + b"iso6" + bytes(4)
    spliced = DATA[:ENDS[0]] + styp + DATA[ENDS[0]:]  # (the stream ends with FFmpeg's mfra, after the last mdat)
    assert scan_fragments(io.BytesIO(spliced), INIT, len(spliced)).end == ENDS[-1] + len(styp)
    odd = DATA[:ENDS[0]] + struct.pack(">I4s", 12, b"abcd") + bytes(4) + DATA[ENDS[0]:]
    with pytest.raises(Unsupported):
        scan_fragments(io.BytesIO(odd), INIT, len(odd))
    large = DATA[:ENDS[0]] + struct.pack(">I4sQ", 1, b"free", 24) + bytes(8) + DATA[ENDS[0]:]  # a 64-bit size
    assert scan_fragments(io.BytesIO(large), INIT, len(large)).end == ENDS[-1] + 24


def test_a_fragment_without_its_decode_time_is_left_to_batch():
    """Without tfdt a fragment's times are the sum of every fragment before it: a window would start at 0."""
    at = DATA.index(b"tfdt", ENDS[1])  # a traf's tfdt in the third fragment, renamed to a box the demuxer skips
    stripped = DATA[:at] + b"free" + DATA[at + 4:]
    assert scan_fragments(io.BytesIO(stripped), INIT, ENDS[1]).end == ENDS[1]  # the fragments before it are fine
    with pytest.raises(Unsupported, match="tfdt"):
        scan_fragments(io.BytesIO(stripped), INIT, len(stripped))


def test_webm_keeps_its_own_layout():
    from tests.media import encode_webm

    assert layout_of(io.BytesIO(encode_webm(Recording(seconds=1)))) is MATROSKA


def test_a_restarted_fragmented_mp4_recorder_is_folded_live(api, rec, live, tmp_path):
    """A new init segment mid-stream (Safari's recorder restarted after a reload): the window before it takes the
    first run to its end, the next begins the second run behind its own init segment, moved as batch moves its
    second segment; the output equals batch packet for packet."""
    first = slice_timeslice(DATA, 8)
    second = slice_timeslice(encode_fmp4(Recording(seconds=3, keyframe_seconds=0.5, width=160, height=120)), 5)
    pieces = first + second
    for start, end in ((0, 5), (5, 10), (10, 13)):
        send(api, rec, pieces[start:end], start)
        live.step(rec)
    state = live.states.get(rec, "alice")
    assert state.failed is None and state.streams["video"].runs == 2 and state.windows >= 3, state
    two_runs_equal_batch(live, rec, tmp_path)


def test_a_restart_in_the_tail_is_folded_at_stop(api, rec, live, tmp_path):
    send(api, rec, slice_timeslice(DATA, 6) + slice_timeslice(DATA, 3))
    live.step(rec, final=True)
    result = live.result(rec, "alice", ["video"])
    assert result is not None and result.segments == 2
    assert packets(result.path) == packets(batch(live, rec, tmp_path))
