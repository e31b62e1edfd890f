"""A chunk that cannot be demuxed is left out of the output and reported: status and manifest list it as missing."""
from __future__ import annotations


from tests.media import Recording, encode_webm, probe, slice_timeslice


def test_a_garbage_chunk_in_the_middle_is_reported_missing(api, worker):
    first = slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)
    second = slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)
    garbage = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 16  # starts like a WebM header, then nothing readable
    pieces = [*first, garbage, *second]  # sequences 0-1, 2 (garbage), 3-4 (a restarted recorder)
    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body["error"]
    video = body["participants"]["alice"]["video"]
    assert video["missing"] == [2] and video["missingCount"] == 1
    assert probe(api.output_path(body, "alice")).frames["video"] > 0
    manifest = api.manifest(body)
    assert manifest["participants"]["alice"]["streams"]["video"]["missing"] == [2]
