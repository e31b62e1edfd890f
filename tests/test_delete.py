"""DELETE /video-calls/recordings/<id> with a real worker on local disk: every object, staged file and key goes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from tests.media import Recording, encode_webm, slice_timeslice
from tests.services import wait_until


@pytest.fixture(scope="module")
def pieces():
    return slice_timeslice(encode_webm(Recording(seconds=1.0)), 3)


def delete(api, rec, sub="host", role="host"):
    return api.client.delete(f"/video-calls/recordings/{rec}", headers=api.auth(sub, role))


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]


def completed(api, pieces) -> dict:
    rec = api.start().get_json()["recordingId"]
    for seq, piece in enumerate(pieces):
        assert api.put_chunk(rec, "alice", "video", seq, piece).status_code == 202
    assert api.stop().status_code == 202
    body = api.wait_final(rec)
    assert body["state"] == "completed", body
    return body


def test_delete_removes_every_object_file_and_key(api, worker, stack_env, pieces):
    body = completed(api, pieces)
    rec = body["recordingId"]
    folder = Path(os.environ["LOCAL_STORAGE_DIR"]) / "recordings" / api.room / rec
    staged = Path(stack_env["STAGING_DIR"]) / rec
    assert (folder / "manifest.json").exists() and (Path(os.environ["LOCAL_STORAGE_DIR"]) / ".tapedeck-meta").is_dir() and api.output_path(body, "alice").exists() and staged.exists()
    response = delete(api, rec)
    assert response.status_code == 202 and response.get_json() == {"recordingId": rec, "state": "deleting"}
    wait_until(lambda: api.status(rec).status_code == 404, 30, interval=0.2, what="the purge")
    client = redis.Redis.from_url(stack_env["REDIS_URL"])
    assert [k for k in client.scan_iter(match=f"*{rec}*", count=1000)] == []
    for index in ("tapedeck:completed", "tapedeck:pending-finalize", f"tapedeck:room:{api.room}:recordings"):
        assert client.zscore(index, rec) is None
    sidecars = Path(os.environ["LOCAL_STORAGE_DIR"]) / ".tapedeck-meta" / "recordings" / api.room / rec
    assert not folder.exists() and not sidecars.exists(), "a deleted recording leaves no (empty) folder behind"
    assert not staged.exists()
    error(delete(api, rec), 404, "not_found")
    listed = api.client.get(f"/video-calls/{api.room}/recordings", headers=api.auth()).get_json()["recordings"]
    assert rec not in [r["recordingId"] for r in listed]


def test_only_an_ended_recording_by_a_host(api, worker, pieces):
    error(api.client.delete("/video-calls/recordings/rec_x"), 401, "unauthorized")
    error(delete(api, "bad id!"), 400, "invalid_request")
    error(delete(api, "rec_missing"), 404, "not_found")
    rec = api.start().get_json()["recordingId"]
    error(delete(api, rec, sub="alice", role="participant"), 403, "forbidden")
    other = api.client.delete(f"/video-calls/recordings/{rec}", headers=api.auth(room="elsewhere"))
    error(other, 403, "forbidden")
    error(delete(api, rec), 409, "invalid_state")
    assert api.status(rec).get_json()["state"] == "recording"


def test_a_room_whose_last_recording_was_deleted_says_so_not_that_it_never_recorded(api, worker, pieces):
    rec = completed(api, pieces)["recordingId"]
    assert delete(api, rec).status_code == 202
    wait_until(lambda: api.status(rec).status_code == 404, 30, interval=0.2, what="the purge")
    for action in ("stop", "pause", "resume"):
        response = api.client.post(f"/video-calls/{api.room}/recording/{action}", headers=api.auth())
        error(response, 404, "not_recording")
        assert "never" not in response.get_json()["error"]["message"], response.get_json()
    error(api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth()), 404, "not_recording")
