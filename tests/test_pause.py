"""Pause/resume through HTTP: host only, in DESIGN's order of checks, chunks accepted while paused, pauses listed."""
from __future__ import annotations

import pytest

from workers.pause import Pause, paused_seconds, recorded_seconds

from tests.media import WEBM_HEADER


def act(api, action, sub="host", role="host", room=None):
    return api.client.post(f"/video-calls/{room or api.room}/recording/{action}", headers=api.auth(sub, role))


def error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_pause_resume_and_chunks_while_paused(api, rec):
    response = act(api, "pause")
    assert response.status_code == 200 and response.get_json() == {"recordingId": rec, "state": "paused"}
    assert api.status(rec).get_json()["state"] == "paused"
    chunk = api.put_chunk(rec, "alice", "video", 0, WEBM_HEADER)
    assert chunk.status_code == 202 and chunk.get_json()["paused"] is True
    pauses = api.status(rec).get_json()["pauses"]
    assert len(pauses) == 1 and pauses[0]["pausedAt"].endswith("Z") and pauses[0]["resumedAt"] is None
    assert act(api, "resume").get_json() == {"recordingId": rec, "state": "recording"}
    after = api.put_chunk(rec, "alice", "video", 1, b"\x01" * 10).get_json()
    assert "paused" not in after
    body = api.status(rec).get_json()
    assert body["pauses"][0]["resumedAt"] >= body["pauses"][0]["pausedAt"]
    assert body["participants"]["alice"]["video"]["missingCount"] == 0


def test_wrong_state_is_409_invalid_state(api, rec):
    error(act(api, "resume"), 409, "invalid_state")
    assert act(api, "pause").status_code == 200
    err = error(act(api, "pause"), 409, "invalid_state")
    assert err["state"] == "paused" and err["recordingId"] == rec
    assert api.stop().status_code == 202
    error(act(api, "resume"), 409, "invalid_state")
    error(act(api, "pause"), 409, "invalid_state")


def test_stop_while_paused_closes_the_pause(api, rec):
    assert act(api, "pause").status_code == 200
    assert api.stop().status_code == 202
    pauses = api.status(rec).get_json()["pauses"]
    assert len(pauses) == 1 and pauses[0]["resumedAt"] is not None


def test_order_of_checks(api):
    error(api.client.post(f"/video-calls/{api.room}/recording/pause"), 401, "unauthorized")
    error(act(api, "pause", room="bad room!"), 400, "invalid_request")
    error(act(api, "pause"), 404, "not_recording")  # this room never recorded
    assert api.start().status_code == 201
    error(act(api, "pause", sub="alice", role="participant"), 403, "forbidden")
    error(act(api, "resume", sub="alice", role="participant"), 403, "forbidden")
    assert api.status(api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth())
                      .get_json()["recordingId"]).get_json()["state"] == "recording"


def test_recorded_seconds_leave_paused_time_out():
    pauses = [Pause(110.0, 120.0), Pause(150.0, None)]
    assert paused_seconds(pauses, 160.0) == 20.0
    rec = {"startedAt": "100.0", "pauses": "110.0:120.0;150.0:"}
    assert recorded_seconds(rec, now=160.0) == 40.0
    assert recorded_seconds({**rec, "stoppedAt": "155.0"}, now=999.0) == 40.0


def test_pause_and_resume_are_published_as_state_events(api, rec, stack_env):
    import json

    import redis

    from workers import keys

    assert act(api, "pause").status_code == 200 and act(api, "resume").status_code == 200
    entries = redis.Redis.from_url(stack_env["REDIS_URL"]).xrange(keys.events(rec))
    states = [json.loads(v).get("state") for _id, fields in entries for k, v in fields.items() if k == b"data"]
    assert states[-2:] == ["paused", "recording"], entries
