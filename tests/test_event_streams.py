"""Event streams at scale, against the Procfile's real `web` line: many idle streams leave the API answering,
streams are capped per token and per recording (429 before any stream starts), end when their token expires,
free their slot when the client goes away, and no token ever reaches the access log."""
from __future__ import annotations

import importlib.util
import time

import pytest
import redis

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, slice_timeslice
from tests.services import ROOT, wait_until


def events_path(recording_id: str, token: str) -> str:
    return f"/video-calls/recordings/{recording_id}/events?token={token}"


def limiter(stack_env, lease_seconds: int | None = None):
    from workers.stream_leases import LEASE_SECONDS, StreamLimiter

    return StreamLimiter(redis.Redis.from_url(stack_env["REDIS_URL"]), 64, 4, lease_seconds or LEASE_SECONDS)


def open_many(live, recording_id: str, tokens: list[str], per_token: int) -> list:
    streams = []
    for token in tokens:
        for _ in range(per_token):
            stream = live.open_stream(events_path(recording_id, token))
            assert stream.status == 200, stream.buffered
            stream.read_until(b"retry: 2000")
            streams.append(stream)
    return streams


def test_eighty_idle_streams_leave_the_api_answering(live_gunicorn, api, stack_env):
    recording_id = api.start().get_json()["recordingId"]
    viewers = [api.token(f"viewer{i}", "participant") for i in range(20)]
    streams = open_many(live_gunicorn, recording_id, viewers, 4)
    assert len(streams) == 80
    try:
        assert live_gunicorn.request("GET", "/healthz", timeout=30).status == 200
        header_chunk = slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)[0]
        upload = live_gunicorn.request(
            "PUT", f"/video-calls/recordings/{recording_id}/participants/alice/video/chunks/0", body=header_chunk,
            headers={**api.auth("alice", "participant"), "Content-Type": "application/octet-stream"}, timeout=30)
        assert upload.status == 202, upload.body
        assert limiter(stack_env).open_streams(recording_id) == 80

        over_token = live_gunicorn.request("GET", events_path(recording_id, viewers[0]))
        assert over_token.status == 429 and over_token.headers["content-type"] == "application/json"
        assert over_token.json()["error"]["code"] == "rate_limited" and int(over_token.headers["retry-after"]) >= 1
    finally:
        for stream in streams:
            stream.close()
    # Closed clients are noticed at the next keep-alive write: every slot comes back within seconds.
    wait_until(lambda: limiter(stack_env).open_streams(recording_id) == 0, 60, interval=0.5,
               what="closed streams to free their leases")
    again = live_gunicorn.open_stream(events_path(recording_id, viewers[0]))
    assert again.status == 200
    again.close()


def test_streams_are_capped_per_recording_before_any_stream_starts(api, stack_env):
    from app import create_app

    capped = create_app({**stack_env, "MAX_EVENT_STREAMS_PER_RECORDING": "3"}).test_client()
    recording_id = api.start().get_json()["recordingId"]
    open_ = [capped.get(events_path(recording_id, api.token(f"v{i}", "participant"))) for i in range(3)]
    assert [r.status_code for r in open_] == [200, 200, 200]
    refused = capped.get(events_path(recording_id, api.token("v9", "participant")))
    assert refused.status_code == 429 and refused.mimetype == "application/json"
    assert refused.get_json()["error"]["code"] == "rate_limited" and refused.headers["Retry-After"]
    other_room = capped.get(events_path(recording_id, api.token("v9", "host", room=f"{api.room}-x")))
    assert other_room.status_code == 403  # a token of another room is refused before it could take a slot
    open_[0].close()  # the server closes a response when its client goes: the slot is free again
    assert capped.get(events_path(recording_id, api.token("v9", "participant"))).status_code == 200


def test_default_recording_cap_leaves_room_for_every_participant_and_hosts():
    from workers.settings import Settings

    defaults = Settings.from_env({"TAPEDECK_ENV": "development"})
    assert defaults.max_event_streams_per_recording > defaults.max_participants
    raised = Settings.from_env({"TAPEDECK_ENV": "development", "MAX_PARTICIPANTS": "300"})
    assert raised.max_event_streams_per_recording > 300


def test_stream_ends_when_its_token_expires(live_gunicorn, api, stack_env):
    recording_id = api.start().get_json()["recordingId"]
    stream = live_gunicorn.open_stream(events_path(recording_id, api.token("viewer", "participant", ttl=3)))
    assert stream.status == 200
    body = stream.read_until(b"0\r\n\r\n", timeout=30)  # the chunked body's end: the server closed the stream
    assert b"event: error" in body and b'"code": "token_expired"' in body
    assert b'"state": "recording"' in body  # it did stream until then
    stream.close()
    wait_until(lambda: limiter(stack_env).open_streams(recording_id) == 0, 30, what="the lease to be released")


def test_leases_of_a_crashed_worker_lapse_on_their_own(api, stack_env):
    recording_id = api.start().get_json()["recordingId"]
    short = limiter(stack_env, lease_seconds=1)
    from workers.errors import RateLimited

    held = [short.acquire(recording_id, "token-of-a-dead-worker") for _ in range(4)]  # never released
    with pytest.raises(RateLimited):
        short.acquire(recording_id, "token-of-a-dead-worker")
    time.sleep(1.5)
    assert short.open_streams(recording_id) == 0
    short.acquire(recording_id, "token-of-a-dead-worker").release()
    assert len(held) == 4


def test_query_token_is_accepted_only_on_get(api):
    recording_id = api.start().get_json()["recordingId"]
    token = api.token()
    assert api.client.get(f"/video-calls/{api.room}/recording?token={token}").status_code == 200
    assert api.client.get(f"/video-calls/recordings/{recording_id}?token={token}").status_code == 200
    stop = api.client.post(f"/video-calls/{api.room}/recording/stop?token={token}")
    assert stop.status_code == 401 and stop.get_json()["error"]["code"] == "unauthorized"
    upload = api.client.put(f"/video-calls/recordings/{recording_id}/participants/host/video/chunks/0?token={token}",
                            data=b"\x1a\x45\xdf\xa3", headers={"Content-Type": "application/octet-stream"})
    assert upload.status_code == 401
    assert api.status(recording_id).get_json()["state"] == "recording"  # the rejected stop changed nothing


def test_access_log_never_shows_a_token(live_gunicorn, api):
    jwt = api.token()
    canary = "SECRET-canary-7f3a"
    live_gunicorn.request("GET", f"/healthz?token={canary}&probe=1")
    live_gunicorn.request("GET", f"/video-calls/{api.room}/recording?access_token={canary}&token={jwt}",
                          headers={"Referer": f"http://app.example/page?token={canary}"})
    live_gunicorn.request("POST", f"/video-calls/{api.room}/recording/stop?token={jwt}",
                          headers={"Authorization": f"Bearer {jwt}"})
    wait_until(lambda: "/recording/stop?token=[redacted]" in live_gunicorn.log_text(), 30, what="the access log")
    log = live_gunicorn.log_text()
    assert canary not in log and jwt not in log and jwt.split(".")[1] not in log
    assert "GET /healthz?token=[redacted]&probe=1 HTTP/1.1" in log


def test_redaction_covers_every_spelling_of_a_token_parameter():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)  # type: ignore[union-attr]
    assert conf.redact_query("a=1&token=x&b=2") == "a=1&token=[redacted]&b=2"
    assert conf.redact_query("access_token=x;TOKEN=y&tok%65n=z") == \
        "access_token=[redacted];TOKEN=[redacted]&tok%65n=[redacted]"
    assert conf.redact_uri_in_line("GET /p?x=1&token=abc HTTP/1.1") == "GET /p?x=1&token=[redacted] HTTP/1.1"
    assert conf.redact("/files/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") == "/files/[redacted]"
    assert conf.redact("/healthz") == "/healthz"


def test_stream_lease_keys_are_exact():
    from workers import keys
    from workers.stream_leases import token_digest

    assert keys.event_stream_leases("rec_1") == "tapedeck:rec:rec_1:stream-leases"
    assert keys.token_stream_leases("ab12") == "tapedeck:token:ab12:stream-leases"
    assert len(token_digest(JWT_SECRET)) == 32 and JWT_SECRET not in token_digest(JWT_SECRET)
