"""Every 4xx of DESIGN.md §4, in its order of checks, and proof that a rejected request changes nothing."""
from __future__ import annotations

import base64
import time

import jwt
import pytest

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, slice_timeslice

from tests.media import WEBM_HEADER


def error(response, status: int, code: str) -> dict:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def chunk_body(rec: str, **overrides) -> dict:
    body = {"recordingId": rec, "participantId": "alice", "type": "video", "sequence": 0,
            "chunk": base64.b64encode(WEBM_HEADER).decode(), "timestamp": 1.0}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def post(api, body, sub="alice", role="participant", **kw):
    return api.client.post("/video-calls/chunks/upload", json=body, headers=api.auth(sub, role), **kw)


def staged_files(stack_env, rec) -> list:
    """Chunk files and temp files of a recording (its recording.json sidecar is written at start); on object-store
    staging the recording's staged chunk objects, read through the staging interface."""
    from pathlib import Path

    if stack_env.get("STAGING_BACKEND") == "object-store":
        from workers.resources import Resources
        from workers.settings import Settings

        staging = Resources.build(Settings.from_env(stack_env), stack_env).staging
        return sorted(str(found.path) for found in staging.scan(rec))
    root = Path(stack_env["STAGING_DIR"]) / rec
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "recording.json") if root.exists() else []


# 401 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-jwt", "Basic abc"])
def test_missing_or_malformed_token_is_401(api, header):
    headers = {"Authorization": header} if header else {}
    error(api.client.post(f"/video-calls/{api.room}/recording/start", headers=headers), 401, "unauthorized")


def test_expired_wrong_key_and_wrong_algorithm_tokens_are_401(api):
    now = int(time.time())
    claims = {"sub": "host", "room": api.room, "role": "host", "exp": now + 60}
    tokens = [
        jwt.encode({**claims, "exp": now - 10}, JWT_SECRET, algorithm="HS256"),
        jwt.encode(claims, "another-secret-another-secret-another", algorithm="HS256"),
        jwt.encode(claims, JWT_SECRET, algorithm="HS512"),
        jwt.encode({k: v for k, v in claims.items() if k != "exp"}, JWT_SECRET, algorithm="HS256"),
        jwt.encode({**claims, "role": "admin"}, JWT_SECRET, algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
    ]
    for token in tokens:
        response = api.client.post(f"/video-calls/{api.room}/recording/start", headers={"Authorization": f"Bearer {token}"})
        error(response, 401, "unauthorized")
    assert api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth()).status_code == 404


def test_token_in_query_string_is_accepted(api, rec):
    response = api.client.get(f"/video-calls/recordings/{rec}?token={api.token()}")
    assert response.status_code == 200 and response.get_json()["state"] == "recording"


# 400 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"recordingId": "../etc"}, "recordingId"),
    ({"participantId": "a" * 65}, "participantId"),
    ({"participantId": "al ice"}, "participantId"),
    ({"type": "screen"}, "type"),
    ({"sequence": -1}, "sequence"),
    ({"sequence": 10_000_001}, "sequence"),
    ({"sequence": "1"}, "sequence"),
    ({"sequence": 1.5}, "sequence"),
    ({"sequence": True}, "sequence"),
    ({"sequence": ...}, "sequence"),
    ({"chunk": ...}, "chunk"),
    ({"chunk": ""}, "chunk"),
    ({"timestamp": "yesterday"}, "timestamp"),
])
def test_bad_chunk_fields_are_400(api, rec, stack_env, overrides, field):
    err = error(post(api, chunk_body(rec, **overrides)), 400, "invalid_request")
    assert err["field"] == field
    assert staged_files(stack_env, rec) == []


def test_bad_base64_is_400_invalid_base64(api, rec, stack_env):
    error(post(api, chunk_body(rec, chunk="***not base64***")), 400, "invalid_base64")
    assert staged_files(stack_env, rec) == []


def test_data_url_prefix_is_accepted(api, rec):
    data_url = "data:video/webm;codecs=vp8,opus;base64," + base64.b64encode(WEBM_HEADER).decode()
    assert post(api, chunk_body(rec, chunk=data_url)).status_code == 202


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b"{\"recordingId\": "])
def test_body_that_is_not_a_json_object_is_400(api, raw):
    response = api.client.post("/video-calls/chunks/upload", data=raw, headers=api.auth("alice", "participant"),
                               content_type="application/json")
    error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", [
    "/video-calls/recordings/{rec}/participants/alice/video/chunks/abc",
    "/video-calls/recordings/{rec}/participants/alice/video/chunks/-1",
    "/video-calls/recordings/{rec}/participants/alice/video/chunks/99999999",
    "/video-calls/recordings/{rec}/participants/alice/screen/chunks/0",
    "/video-calls/recordings/{rec}/participants/al%20ice/video/chunks/0",
    "/video-calls/recordings/rec%2E%2E/participants/alice/video/chunks/0",
])
def test_bad_put_path_is_400(api, rec, path):
    response = api.client.put(path.format(rec=rec), data=WEBM_HEADER, headers=api.auth("alice", "participant"))
    error(response, 400, "invalid_request")


def test_empty_put_body_and_bad_timestamp_header_are_400(api, rec):
    url = f"/video-calls/recordings/{rec}/participants/alice/video/chunks/0"
    error(api.client.put(url, data=b"", headers=api.auth("alice", "participant")), 400, "invalid_request")
    headers = {**api.auth("alice", "participant"), "Tapedeck-Timestamp": "soon"}
    error(api.client.put(url, data=WEBM_HEADER, headers=headers), 400, "invalid_request")


def test_bad_room_and_start_body_are_400(api):
    error(api.client.post("/video-calls/bad.room/recording/start", headers=api.auth()), 400, "invalid_request")
    error(api.start(format="avi"), 400, "invalid_request")
    error(api.client.post(f"/video-calls/{api.room}/recording/start", data=b"{", headers=api.auth(),
                          content_type="application/json"), 400, "invalid_request")
    error(api.client.get("/video-calls/recordings/rec.1", headers=api.auth()), 400, "invalid_request")
    assert api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth()).status_code == 404


# 413 ---------------------------------------------------------------------------------------------

def test_chunk_over_the_limit_is_413_and_checked_before_404(stack_env, api):
    from app import create_app

    small = create_app({**stack_env, "MAX_CHUNK_BYTES": "1024"}).test_client()
    big = base64.b64encode(b"\x00" * 1025).decode()
    body = chunk_body("rec_unknown", chunk=big)
    error(small.post("/video-calls/chunks/upload", json=body, headers=api.auth("alice", "participant")), 413, "payload_too_large")
    url = "/video-calls/recordings/rec_unknown/participants/alice/video/chunks/0"
    error(small.put(url, data=b"\x00" * 1025, headers=api.auth("alice", "participant")), 413, "payload_too_large")
    assert small.put(url, data=b"\x00" * 1024, headers=api.auth("alice", "participant")).status_code == 404


# 404 ---------------------------------------------------------------------------------------------

def test_unknown_recording_and_room_are_404(api):
    error(post(api, chunk_body("rec_doesnotexist")), 404, "not_found")
    error(api.status("rec_doesnotexist"), 404, "not_found")
    error(api.stop(), 404, "not_recording")
    error(api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth()), 404, "not_recording")


def test_404_comes_before_403(api):
    other_room = api.auth("alice", "participant", room="elsewhere")
    error(api.client.post("/video-calls/chunks/upload", json=chunk_body("rec_nope"), headers=other_room), 404, "not_found")


# 403 ---------------------------------------------------------------------------------------------

def test_only_hosts_start_and_stop(api, rec):
    participant = api.auth("alice", "participant")
    error(api.client.post(f"/video-calls/{api.room}/recording/start", headers=participant), 403, "forbidden")
    error(api.client.post(f"/video-calls/{api.room}/recording/stop", headers=participant), 403, "forbidden")
    other_host = api.auth("host", "host", room="another-room")
    error(api.client.post(f"/video-calls/{api.room}/recording/stop", headers=other_host), 403, "forbidden")
    assert api.status(rec).get_json()["state"] == "recording"


def test_uploads_only_for_own_participant_and_room(api, rec, stack_env):
    error(post(api, chunk_body(rec, participantId="bob"), sub="alice"), 403, "forbidden")
    error(post(api, chunk_body(rec, participantId="bob"), sub="host", role="host"), 403, "forbidden")
    headers = api.auth("alice", "participant", room="another-room")
    error(api.client.post("/video-calls/chunks/upload", json=chunk_body(rec), headers=headers), 403, "forbidden")
    error(api.client.get(f"/video-calls/recordings/{rec}", headers=headers), 403, "forbidden")
    error(api.client.get(f"/video-calls/{api.room}/recording", headers=headers), 403, "forbidden")
    assert staged_files(stack_env, rec) == []
    assert api.status(rec).get_json()["participants"] == {}


def test_participants_can_read_state_and_host_can_upload_own_media(api, rec):
    body = api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth("alice", "participant")).get_json()
    assert body == {"recordingId": rec, "state": "recording"}
    assert post(api, chunk_body(rec, participantId="host"), sub="host", role="host").status_code == 202


# 409 ---------------------------------------------------------------------------------------------

def test_second_start_is_409_with_the_running_id(api, rec):
    err = error(api.start(), 409, "already_recording")
    assert err["recordingId"] == rec


def test_upload_after_grace_is_409_and_before_415(api, rec, worker):
    assert api.stop().status_code == 202
    deadline = time.time() + 30
    while api.status(rec).get_json()["state"] in ("recording", "finalizing") and time.time() < deadline:
        time.sleep(0.2)
    error(post(api, chunk_body(rec, chunk=base64.b64encode(b"garbage").decode())), 409, "not_recording")


def test_conflict_is_checked_before_container(api, rec):
    assert post(api, chunk_body(rec)).status_code == 202
    error(post(api, chunk_body(rec, chunk=base64.b64encode(b"garbage bytes").decode())), 409, "sequence_conflict")


# 415 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, hint", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 24, "PNG image"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3"),
    (b"\x00\x00\x01\x00moof\x00\x00\x00\x10mfhd", "expected 'ftyp'"),
    (b"RIFF....WAVEfmt ", "first bytes"),
])
def test_header_chunk_must_be_webm_or_fmp4(api, rec, stack_env, data, hint):
    err = error(post(api, chunk_body(rec, chunk=base64.b64encode(data).decode())), 415, "unsupported_media")
    assert hint in err["message"]
    assert staged_files(stack_env, rec) == []
    # The same sequence is still free for the right bytes.
    assert post(api, chunk_body(rec)).status_code == 202


def test_fmp4_init_segment_is_accepted(api, rec, stack_env):
    init = b"\x00\x00\x00\x1cftypiso5\x00\x00\x02\x00iso5iso6mp41" + b"\x00\x00\x00\x08moov"
    response = post(api, chunk_body(rec, chunk=base64.b64encode(init).decode()))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["bytes"] == len(init) and len(staged_files(stack_env, rec)) == 1


def test_later_chunks_are_not_sniffed(api, rec):
    pieces = slice_timeslice(encode_webm(Recording(seconds=1.0)), 3)
    assert post(api, chunk_body(rec, sequence=2, chunk=base64.b64encode(pieces[2]).decode())).status_code == 202


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"redis": "ok", "storage": "ok", "staging": "ok"}


def test_readiness_is_503_when_redis_is_down(stack_env):
    from app import create_app

    from tests.services import free_port

    broken = create_app({**stack_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).test_client()
    response = broken.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"] == "unavailable"
    assert broken.get("/video-calls/recordings/rec_x", headers={}).status_code == 401


def test_staging_failure_is_503_with_retry_after_and_leaves_no_record(stack_env, api, tmp_path):
    from app import create_app

    blocker = tmp_path / "file"
    blocker.write_text("paths under a regular file fail with ENOTDIR, even for root")
    if stack_env.get("STAGING_BACKEND") == "object-store":  # a bucket that cannot be reached
        broken = create_app({**stack_env, "S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"})
    else:
        broken = create_app({**stack_env, "STAGING_DIR": str(blocker / "staging")})
    rec = api.start().get_json()["recordingId"]
    response = broken.test_client().post("/video-calls/chunks/upload", json=chunk_body(rec),
                                         headers=api.auth("alice", "participant"))
    error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "2"
    assert api.status(rec).get_json()["participants"] == {}


@pytest.mark.parametrize("backend", ["local", "object-store"])
def test_start_is_503_and_creates_nothing_while_staging_cannot_keep_its_descriptor(stack_env, storage_env, api,
                                                                                   tmp_path, backend):
    """Found from outside: a recording started while staging was down answered 201 without its recording.json, so
    once its chunks were staged, `rebuild` after a lost Redis could not bring it back (no room, no format)."""
    from app import create_app

    blocker = tmp_path / "file"
    blocker.write_text("paths under a regular file fail with ENOTDIR, even for root")
    if backend == "local":
        env = {**stack_env, "STAGING_BACKEND": "local", "STAGING_DIR": str(blocker / "staging")}
    else:
        env = {**stack_env, **storage_env("s3"), "STAGING_BACKEND": "object-store",
               "S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    response = create_app(env).test_client().post(f"/video-calls/{api.room}/recording/start", headers=api.auth())
    error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "2"
    error(api.client.get(f"/video-calls/{api.room}/recording", headers=api.auth()), 404, "not_recording")
    assert api.start().status_code == 201  # staging is back: the room starts as if nothing happened


def test_redis_outage_is_503_with_retry_after(stack_env, api):
    from app import create_app

    from tests.services import free_port

    broken = create_app({**stack_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).test_client()
    response = broken.post(f"/video-calls/{api.room}/recording/start", headers=api.auth())
    error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("body, says", [("hello", "Expecting value at line 1 column 1"),
                                        ('{"format": "webm",}', "line 1 column"),
                                        ("\xff\xfe", "not valid JSON")])
def test_a_body_that_is_not_json_says_what_is_wrong(client, body, says):
    """Found from outside: every malformed body was answered 'NaN and Infinity are not JSON numbers'."""
    from app.auth import mint_token
    from tests.conftest import JWT_SECRET

    headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'errs', 'host', 'host', 600)}",
               "Content-Type": "application/json"}
    data = body.encode("latin-1") if body.startswith("\xff") else body
    response = client.post("/video-calls/errs/recording/start", data=data, headers=headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and says in error["message"] and "NaN" not in error["message"]
