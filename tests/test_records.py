"""Typed records keep the wire shapes clients have always seen: an output read back writes the same JSON."""
from __future__ import annotations

import json

from workers.media.muxer import TrackInfo
from workers.records import StoredOutput, outputs_json, parse_outputs

WIRE = {
    "participantId": "alice", "format": "webm", "bytes": 1234, "durationSeconds": 3.5, "provider": "local",
    "key": "recordings/r/rec_1/alice.webm", "sha256": "ab" * 32, "method": "copy",
    "tracks": [{"kind": "video", "codec": "vp8", "source": "video", "packets": 90, "width": 320, "height": 240,
                "method": "copy"}],
    "segments": 1, "mediaStartSeconds": 0.0, "timestampRepairs": 0, "droppedPackets": 0,
    "thumbnailKey": "recordings/r/rec_1/alice.jpg", "thumbnail": {"width": 320, "height": 240, "atSeconds": 1.0},
}


def test_an_output_round_trips_to_the_same_json_in_the_same_order():
    aligned = {**WIRE, "startOffsetSeconds": 0.25}
    for body in (WIRE, aligned, {**WIRE, "thumbnailKey": None, "thumbnail": None}):
        assert list(StoredOutput.from_json(body).to_json().items()) == list(body.items())


def test_start_offset_appears_only_once_aligned_and_may_be_unknown():
    output = StoredOutput.from_json(WIRE)
    assert "startOffsetSeconds" not in output.to_json()
    assert output.aligned_at(None).to_json()["startOffsetSeconds"] is None
    assert output.aligned_at(1.5).to_json()["startOffsetSeconds"] == 1.5


def test_status_url_fields_are_not_read_back_and_keys_name_every_object():
    output = StoredOutput.from_json({**WIRE, "url": "http://x", "thumbnailUrl": "http://y"})
    assert "url" not in output.to_json() and output.object_keys() == [WIRE["key"], WIRE["thumbnailKey"]]


def test_the_outputs_field_is_sorted_by_participant():
    bob = {**WIRE, "participantId": "bob", "key": "recordings/r/rec_1/bob.webm"}
    parsed = parse_outputs(json.dumps([bob, WIRE]))
    assert [o["participantId"] for o in outputs_json(parsed)] == ["alice", "bob"]
    assert parse_outputs(None) == {}


def test_a_track_keeps_the_wire_word_kind_for_its_media_type():
    body = TrackInfo("audio", "opus", "video", 10).to_json()
    assert body == {"kind": "audio", "codec": "opus", "source": "video", "packets": 10, "width": None, "height": None}
