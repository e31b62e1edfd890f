"""Issue 9's demonstrated trust bugs, each as a test that failed before its fix: no participant's data, no
client clock and no lost Redis reply can fail a recording, hide a hole or lose an acknowledged chunk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.media import Recording, encode_webm, probe, slice_timeslice
from tests.services import wait_until

YEAR_2100_MS = 4_102_444_800_000


@pytest.fixture(scope="module")
def pieces() -> list[bytes]:
    return slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)


def start(api) -> str:
    response = api.start()
    assert response.status_code == 201, response.get_json()
    return response.get_json()["recordingId"]


def post_raw(api, text: str, sub: str = "alice"):
    headers = {**api.auth(sub, "participant"), "Content-Type": "application/json"}
    return api.client.post("/video-calls/chunks/upload", data=text, headers=headers)


def chunk_json(recording_id: str, data: bytes, timestamp: str, sequence: int = 0) -> str:
    import base64

    chunk = base64.b64encode(data).decode()
    return (f'{{"recordingId": "{recording_id}", "participantId": "alice", "type": "video", '
            f'"sequence": {sequence}, "chunk": "{chunk}", "timestamp": {timestamp}}}')


def assert_error(response, status: int, code: str) -> None:
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert body["error"]["code"] == code and body["error"]["message"], body


def held_chunks(api, recording_id: str) -> int:
    participants = api.status(recording_id).get_json()["participants"]
    return sum(s["chunks"] for p in participants.values() for k, s in p.items() if k in ("video", "audio"))


# 1. Timestamps: reject what cannot be a time, accept every clock that can ----------------------------

@pytest.mark.parametrize("timestamp", ["Infinity", "-Infinity", "NaN", "1e400", "1" + "0" * 400, "-1",
                                       str(YEAR_2100_MS + 1), "999999999999999", '"soon"', "true"])
def test_json_timestamp_that_cannot_be_a_time_is_400_and_stores_nothing(api, pieces, timestamp):
    recording_id = start(api)
    response = post_raw(api, chunk_json(recording_id, pieces[0], timestamp))
    assert_error(response, 400, "invalid_request")
    message = response.get_json()["error"]["message"]
    assert "timestamp" in message or ("NaN and Infinity" in message and timestamp.lstrip("-") in ("Infinity", "NaN"))
    assert held_chunks(api, recording_id) == 0


@pytest.mark.parametrize("header", ["999999999999999", "inf", "nan", "-5", "1e400", str(YEAR_2100_MS + 1), "12abc"])
def test_header_timestamp_that_cannot_be_a_time_is_400(api, pieces, header):
    recording_id = start(api)
    url = f"/video-calls/recordings/{recording_id}/participants/alice/video/chunks/0"
    headers = {**api.auth("alice", "participant"), "Tapedeck-Timestamp": header}
    response = api.client.put(url, data=pieces[0], headers=headers)
    assert_error(response, 400, "invalid_request")
    assert held_chunks(api, recording_id) == 0


@pytest.mark.parametrize("timestamp", ["1234567890", "0", "1234567890.5", str(YEAR_2100_MS), "1700000000000"])
def test_skewed_and_seconds_clocks_are_accepted(api, pieces, timestamp):
    recording_id = start(api)
    response = post_raw(api, chunk_json(recording_id, pieces[0], timestamp))
    assert response.status_code == 202, response.get_json()


def test_deeply_nested_json_is_400(api):
    response = post_raw(api, "[" * 100_000 + "]" * 100_000)
    assert_error(response, 400, "invalid_request")
    response = post_raw(api, '{"a":' * 100_000 + "1" + "}" * 100_000)
    assert_error(response, 400, "invalid_request")


def test_a_stored_absurd_clock_fails_no_one(api, app, worker, pieces):
    """A record written before the edge checked clocks (or by any future path): finalize completes, both
    participants get outputs, and the absurd clock only loses that participant's alignment."""
    from app.services import services
    from workers.state import ChunkRecord

    recording_id = start(api)
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece, timestamp=1.7e12 + 500 * sequence).status_code == 202
    with app.app_context():
        svc = services()
        for sequence, piece in enumerate(pieces):
            staged = svc.staging.stage(recording_id, "bob", "video", sequence, piece)
            record = ChunkRecord(digest=staged.digest, size=staged.size, timestamp=999999999999999.0 * 1e280, name=staged.name)
            outcome, _ = svc.store.accept_chunk(recording_id, "bob", "video", sequence, record, container_ok=True,
                                                header=sequence == 0)
            assert outcome == "stored"
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert sorted(o["participantId"] for o in body["outputs"]) == ["alice", "bob"]
    for participant in ("alice", "bob"):
        assert probe(api.output_path(body, participant)).frames["video"] > 0
    manifest = api.manifest(body)
    assert manifest["participants"]["alice"]["startOffsetSeconds"] == 0.0
    assert manifest["participants"]["bob"]["clientStartTimestamp"] is None



def test_one_participant_s_absurd_timestamp_does_not_move_the_others(api, worker, pieces):
    """Found from outside: bob sends one chunk stamped 2099 (a time, so accepted). His clock offset (least arrival
    minus timestamp) then says -73 years, his corrected start lands 73 years before the recording began, and
    alice's output was placed 2.3e9 s into the recording. Each start must stay on the recording's own timeline."""
    import time

    recording_id = start(api)
    now_ms = time.time() * 1000.0
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece, timestamp=now_ms + 500 * sequence).status_code == 202
        stamp = YEAR_2100_MS - 1 if sequence == 1 else now_ms + 500 * sequence
        assert api.put_chunk(recording_id, "bob", "video", sequence, piece, timestamp=stamp).status_code == 202
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    offsets = {o["participantId"]: o["startOffsetSeconds"] for o in body["outputs"]}
    assert sorted(offsets) == ["alice", "bob"]
    assert all(0.0 <= offset < 60.0 for offset in offsets.values()), offsets
    manifest = api.manifest(body)
    assert {pid: p["startOffsetSeconds"] for pid, p in manifest["participants"].items()} == offsets

# 3. An acknowledged chunk never vanishes ----------------------------------------------------------------

def test_commit_whose_reply_is_lost_keeps_the_chunk(api, app, worker, pieces, monkeypatch):
    """Redis commits the chunk but the reply times out: the client sees 503, retries, gets duplicate: true,
    and the chunk is in the output (before: the staged file had been deleted and finalize skipped it)."""
    from app.services import services

    recording_id = start(api)
    with app.app_context():
        intake_store = services().intake.store
    real = intake_store.accept_chunk
    lost = {"count": 0}

    def commit_then_lose_reply(*args, **kwargs):
        result = real(*args, **kwargs)
        if args[3] == 2 and lost["count"] == 0:
            lost["count"] += 1
            raise redis.TimeoutError("Timeout reading from socket")
        return result

    monkeypatch.setattr(intake_store, "accept_chunk", commit_then_lose_reply)
    for sequence, piece in enumerate(pieces):
        response = api.put_chunk(recording_id, "alice", "video", sequence, piece)
        if sequence == 2:
            assert_error(response, 503, "unavailable")
            assert response.headers.get("Retry-After")
            response = api.put_chunk(recording_id, "alice", "video", sequence, piece)
            assert response.status_code == 202 and response.get_json()["duplicate"] is True
        else:
            assert response.status_code == 202
    monkeypatch.undo()
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    video = body["participants"]["alice"]["video"]
    assert (video["chunks"], video["missing"], video["missingCount"]) == (4, [], 0), video
    whole = probe_whole(pieces, api.output_path(body, "alice").parent)
    assert probe(api.output_path(body, "alice")).frames["video"] >= whole - 1


def probe_whole(pieces: list[bytes], directory: Path) -> int:
    reference = directory / "reference-input.webm"
    reference.write_bytes(b"".join(pieces))
    try:
        return probe(reference).frames["video"]
    finally:
        reference.unlink()


def test_unreadable_staged_chunk_is_reported_missing(api, app, worker, pieces, stack_env):
    recording_id = start(api)
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    from app.services import services

    with app.app_context():
        staging = services().staging
    staged = [found for found in staging.scan(recording_id) if found.sequence == 2]
    assert len(staged) == 1
    staging.delete_chunk(recording_id, "alice", "video", staged[0].name)  # a lost disk block, an operator's rm
    assert api.stop().status_code == 202
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    video = body["participants"]["alice"]["video"]
    assert video["missing"] == [2] and video["missingCount"] == 1, video
    manifest = api.manifest(body)
    assert manifest["participants"]["alice"]["streams"]["video"]["missing"] == [2]


# 12. A participant sees only itself ---------------------------------------------------------------------

def test_participant_token_sees_only_its_own_entry_and_output(api, worker, pieces):
    recording_id = start(api)
    for participant in ("alice", "bob"):
        for sequence, piece in enumerate(pieces):
            assert api.put_chunk(recording_id, participant, "video", sequence, piece).status_code == 202
    assert api.stop().status_code == 202
    host_view = api.wait_final(recording_id)
    assert sorted(host_view["participants"]) == ["alice", "bob"] and len(host_view["outputs"]) == 2
    bob = api.client.get(f"/video-calls/recordings/{recording_id}", headers=api.auth("bob", "participant")).get_json()
    assert bob["state"] == "completed"
    assert list(bob["participants"]) == ["bob"]
    assert [o["participantId"] for o in bob["outputs"]] == ["bob"]
    carol = api.client.get(f"/video-calls/recordings/{recording_id}", headers=api.auth("carol", "participant")).get_json()
    assert carol["participants"] == {} and carol["outputs"] == []



def test_a_failed_recording_s_error_names_no_other_participant_to_a_participant(api, worker, pieces):
    """Found from outside: when no participant produced an output, the recording's `error` listed each
    participant's id and reason, so a participant's token learnt everyone's. It sees its own reason only."""
    import os

    recording_id = start(api)
    for participant in ("alice", "bob"):
        assert api.put_chunk(recording_id, participant, "video", 0, pieces[0][:200]).status_code == 202
        assert api.put_chunk(recording_id, participant, "video", 1, os.urandom(4000)).status_code == 202
    assert api.stop().status_code == 202
    host_view = api.wait_final(recording_id)
    assert host_view["state"] == "failed" and "alice" in host_view["error"] and "bob" in host_view["error"]
    bob = api.client.get(f"/video-calls/recordings/{recording_id}", headers=api.auth("bob", "participant")).get_json()
    assert bob["state"] == "failed" and bob["error"].startswith("no participant produced an output")
    assert "alice" not in json.dumps(bob)
    assert bob["participants"]["bob"]["error"] and bob["error"].endswith(bob["participants"]["bob"]["error"])
    events = api.client.get(f"/video-calls/recordings/{recording_id}/events?token={api.token('bob', 'participant')}")
    assert "failed" in events.get_data(as_text=True) and "alice" not in events.get_data(as_text=True)

# Participant limit ------------------------------------------------------------------------------------------

def test_participant_beyond_the_limit_is_409_and_existing_ones_continue(stack_env, room, pieces):
    from app import create_app
    from tests.conftest import Api

    limited = create_app({**stack_env, "MAX_PARTICIPANTS": "2"})
    api = Api(limited.test_client(), limited, room)
    recording_id = start(api)
    for participant in ("alice", "bob"):
        assert api.put_chunk(recording_id, participant, "video", 0, pieces[0]).status_code == 202
    response = api.put_chunk(recording_id, "carol", "video", 0, pieces[0])
    assert_error(response, 409, "participant_limit")
    assert api.put_chunk(recording_id, "alice", "audio", 0, pieces[0]).status_code == 202  # a second stream is fine
    assert api.put_chunk(recording_id, "bob", "video", 1, pieces[1]).status_code == 202
    assert "carol" not in api.status(recording_id).get_json()["participants"]


# 15. Staging below its free-space floor -----------------------------------------------------------------------

def test_chunks_below_the_free_space_floor_get_503_and_nothing_is_stored(stack_env, room, pieces):
    if stack_env.get("STAGING_BACKEND") == "object-store":
        pytest.skip("a bucket has no free-space floor (tests/test_staging.py covers its 503)")
    from app import create_app
    from tests.conftest import Api

    full = create_app({**stack_env, "STAGING_MIN_FREE_BYTES": str(2**62)})
    api = Api(full.test_client(), full, room)
    recording_id = start(api)
    response = api.put_chunk(recording_id, "alice", "video", 0, pieces[0])
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"]
    assert "space" in response.get_json()["error"]["message"]
    assert held_chunks(api, recording_id) == 0
    assert not list((Path(stack_env["STAGING_DIR"]) / recording_id).rglob("*.chunk"))
    ready = api.client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["staging"] == "low_space"


# 8. Rebuild the index from staging --------------------------------------------------------------------------

def test_rebuild_restores_a_forgotten_recording_from_staging(api, app, worker, pieces):
    from app.services import services
    from workers import keys

    recording_id = start(api)
    for sequence, piece in enumerate(pieces):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece, timestamp=1.7e12 + sequence).status_code == 202
    assert api.stop().status_code == 202
    with app.app_context():
        client = services().redis
    wait_until(lambda: api.status(recording_id).get_json()["state"] in ("completed", "failed"), 60)
    doomed = [k for k in client.scan_iter(match=keys.recording(recording_id) + "*")]
    client.delete(*doomed)  # Redis restarted without persistence: the recording is forgotten
    assert api.status(recording_id).status_code == 404

    result = app.test_cli_runner().invoke(args=["rebuild", recording_id])
    assert result.exit_code == 0, result.output
    assert "4 chunks" in result.output
    body = api.status(recording_id).get_json()
    assert body["room"] == api.room and body["state"] == "failed"
    assert body["participants"]["alice"]["video"]["chunks"] == 4
    result = app.test_cli_runner().invoke(args=["requeue", recording_id])
    assert result.exit_code == 0, result.output
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert probe(api.output_path(body, "alice")).frames["video"] > 0


def test_deeply_nested_metadata_is_400_so_it_cannot_fail_finalize(api):
    """Nested 900 deep it parses, but pretty-printing the manifest would recurse past Python's limit."""
    deep = '{"metadata": ' + '{"a":' * 900 + "1" + "}" * 900 + "}"
    response = api.client.post(f"/video-calls/{api.room}/recording/start", data=deep,
                               headers={**api.auth(), "Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request")
    assert "metadata" in response.get_json()["error"]["message"]
    shallow = api.client.post(f"/video-calls/{api.room}/recording/start",
                              json={"metadata": {"call": {"topic": "weekly", "tags": ["a", "b"]}}}, headers=api.auth())
    assert shallow.status_code == 201, shallow.get_json()


def test_rebuild_of_a_recording_lost_while_paused_closes_its_pause_at_its_stop(api, app, pieces):
    """As stop closes an open pause: a rebuilt recording is stopped, so no pause of it may stay open."""
    from app.services import services
    from workers import keys

    recording_id = start(api)
    assert api.put_chunk(recording_id, "alice", "video", 0, pieces[0]).status_code == 202
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=api.auth()).status_code == 200
    with app.app_context():
        client = services().redis
    client.delete(*client.scan_iter(match=keys.recording(recording_id) + "*"))  # lost while paused

    result = app.test_cli_runner().invoke(args=["rebuild", recording_id])
    assert result.exit_code == 0, result.output
    body = api.status(recording_id).get_json()
    assert body["state"] == "failed" and len(body["pauses"]) == 1, body
    assert body["pauses"][0]["resumedAt"] == body["stoppedAt"], body["pauses"]
