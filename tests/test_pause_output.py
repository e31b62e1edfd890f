"""Pause end to end with a real worker: a client that paused its recorder gets one continuous file per participant."""
from __future__ import annotations


import pytest

from tests.media import Recording, encode_webm, probe, slice_timeslice

RECORDED = 3.0
PAUSED_MEDIA = 4.0
"""The pausing client's timestamps jump by this much where it paused (as MediaRecorder's clock kept running)."""


@pytest.fixture(scope="module")
def paused_media(tmp_path_factory):
    data = encode_webm(Recording(seconds=RECORDED, pts_gap=(1.5, PAUSED_MEDIA)))
    return slice_timeslice(data, 6)


def test_pausing_client_yields_one_file_without_the_pause(api, worker, paused_media):
    recording_id = api.start().get_json()["recordingId"]
    host = api.auth()
    for seq, piece in enumerate(paused_media[:3]):
        assert api.put_chunk(recording_id, "alice", "video", seq, piece, timestamp=1_700_000_000_000 + seq).status_code == 202
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=host).status_code == 200
    assert api.client.post(f"/video-calls/{api.room}/recording/resume", headers=host).status_code == 200
    for seq, piece in enumerate(paused_media[3:], start=3):
        assert api.put_chunk(recording_id, "alice", "video", seq, piece, timestamp=1_700_000_000_000 + seq).status_code == 202
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert [o["participantId"] for o in body["outputs"]] == ["alice"]
    assert body["participants"]["alice"]["video"]["missingCount"] == 0
    got = probe(api.output_path(body, "alice"))
    assert abs(got.duration - RECORDED) <= 0.1, got.duration
    times = sorted(got.video_times)
    assert max(b - a for a, b in zip(times, times[1:])) < 0.5
    manifest = api.manifest(body)
    assert len(manifest["pauses"]) == 1 and manifest["pauses"][0]["resumedAt"] is not None
