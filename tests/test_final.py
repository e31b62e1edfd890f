"""End of stream: final: true / Tapedeck-Final marks a stream's last chunk; nothing may follow it."""
from __future__ import annotations

import base64

import pytest

from tests.media import WEBM_HEADER


def put(api, rec, seq, data, final=None):
    headers = {**api.auth("alice", "participant"), "Content-Type": "application/octet-stream"}
    if final is not None:
        headers["Tapedeck-Final"] = final
    return api.client.put(f"/video-calls/recordings/{rec}/participants/alice/video/chunks/{seq}", data=data,
                          headers=headers)


def post(api, rec, seq, data, final):
    body = {"recordingId": rec, "participantId": "alice", "type": "video", "sequence": seq,
            "chunk": base64.b64encode(data).decode(), "final": final}
    return api.client.post("/video-calls/chunks/upload", json=body, headers=api.auth("alice", "participant"))


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]


def video(api, rec) -> dict:
    return api.status(rec).get_json()["participants"]["alice"]["video"]


def test_final_header_marks_the_last_chunk_and_refuses_later_ones(api, rec):
    assert put(api, rec, 0, WEBM_HEADER).status_code == 202
    assert "finalSequence" not in video(api, rec)
    assert put(api, rec, 3, b"\x03" * 8, final="true").status_code == 202
    assert video(api, rec)["finalSequence"] == 3
    error(put(api, rec, 4, b"\x04" * 8), 409, "sequence_conflict")
    assert put(api, rec, 3, b"\x03" * 8, final="true").get_json()["duplicate"] is True  # a retry stays safe
    assert put(api, rec, 1, b"\x01" * 8).status_code == 202  # holes below it still fill
    error(put(api, rec, 2, b"\x02" * 8, final="true"), 409, "sequence_conflict")  # a second, lower final
    facts = video(api, rec)
    assert facts["lastSequence"] == 3 and facts["missing"] == [2] and facts["chunks"] == 3


def test_final_json_field_and_a_final_below_a_held_chunk(api, rec):
    assert post(api, rec, 0, WEBM_HEADER, False).status_code == 202
    assert post(api, rec, 2, b"\x02" * 8, None).status_code == 202
    error(post(api, rec, 1, b"\x01" * 8, True), 409, "sequence_conflict")
    assert post(api, rec, 2, b"\x02" * 8, None).get_json()["duplicate"] is True
    assert post(api, rec, 3, b"\x03" * 8, True).status_code == 202
    assert video(api, rec)["finalSequence"] == 3


@pytest.mark.parametrize("value", ["yes", "1", "truee"])
def test_a_malformed_final_header_is_invalid_request(api, rec, value):
    error(put(api, rec, 0, WEBM_HEADER, final=value), 400, "invalid_request")
    assert api.status(rec).get_json()["participants"] == {}


def test_a_malformed_final_field_is_invalid_request(api, rec):
    error(post(api, rec, 0, WEBM_HEADER, "true"), 400, "invalid_request")


def test_stop_after_every_final_closes_the_grace_window_and_finalizes(api, worker):
    from tests.media import Recording, encode_webm, slice_timeslice

    rec = api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=1.0)), 3)
    for seq, piece in enumerate(pieces):
        assert put(api, rec, seq, piece, final="true" if seq == len(pieces) - 1 else None).status_code == 202
    assert api.stop().status_code == 202
    # nothing more can come from the only stream, so a late chunk of another one is already too late
    late = api.put_chunk(rec, "bob", "video", 0, WEBM_HEADER)
    error(late, 409, "not_recording")
    body = api.wait_final(rec)
    assert body["state"] == "completed" and body["participants"]["alice"]["video"]["finalSequence"] == 2


def test_a_late_final_chunk_filling_the_last_hole_closes_the_window(api, worker):
    from tests.media import Recording, encode_webm, slice_timeslice

    rec = api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=1.0)), 3)
    assert put(api, rec, 0, pieces[0]).status_code == 202
    assert put(api, rec, 2, pieces[2], final="true").status_code == 202
    assert api.stop().status_code == 202  # a hole before the final chunk: the grace window stays open
    assert put(api, rec, 1, pieces[1]).status_code == 202  # the last one missing arrives in the window
    error(api.put_chunk(rec, "bob", "video", 0, WEBM_HEADER), 409, "not_recording")
    body = api.wait_final(rec)
    assert body["state"] == "completed" and body["participants"]["alice"]["video"]["missingCount"] == 0
