"""CHUNK_RATE_LIMIT: one bucket per participant across both chunk routes, checked after the token, before the body."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import JWT_SECRET
from tests.rate_room import Room, window_pattern
from tests.services import free_port, wait_until

RATE = "5/second"
LIMIT = 5
BURST_BUDGET_SECONDS = 0.8
"""A burst slower than this may straddle the fixed window's reset; it is then retried, never asserted on."""


@pytest.fixture(scope="module")
def limited_app(stack_env):
    from app import create_app

    return create_app({**stack_env, "CHUNK_RATE_LIMIT": RATE})


@pytest.fixture
def rc(stack_env) -> redis.Redis:
    return redis.Redis.from_url(stack_env["REDIS_URL"])


def exhaust(room: Room, sub: str, rc: redis.Redis) -> int:
    """Spend sub's whole window on both routes (PUT and JSON alternately); returns the next unused sequence."""
    for _attempt in range(5):
        wait_until(lambda: not rc.keys(window_pattern(room, sub)), 10, interval=0.05, what="sub's window to close")
        began = time.monotonic()
        sent = [(room.put if n % 2 else room.post)(sub, 1 + n) for n in range(LIMIT)]
        if time.monotonic() - began < BURST_BUDGET_SECONDS:
            assert [r.status_code for r in sent] == [202] * LIMIT, [r.get_json() for r in sent]
            return 1 + LIMIT
    pytest.skip("machine too slow to send a burst inside one window")


def staged(stack_env, rec: str) -> list[Path]:
    root = Path(stack_env["STAGING_DIR"]) / rec
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_sixth_upload_in_a_second_is_429_with_retry_after_and_changes_nothing(limited_app, stack_env, rc):
    from workers import keys

    room = Room(limited_app)
    for _attempt in range(5):
        next_seq = exhaust(room, "alice", rc)
        files_before = staged(stack_env, room.rec)
        response = room.put("alice", next_seq)
        if response.status_code == 429:
            break
    body = response.get_json()
    assert response.status_code == 429, body
    assert body["error"]["code"] == "rate_limited" and body["error"]["message"], body
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    assert staged(stack_env, room.rec) == files_before  # the rejected request wrote nothing
    assert not rc.hexists(keys.stream_chunks(room.rec, "alice", "video"), str(next_seq))
    assert rc.keys(window_pattern(room, "alice"))  # the counters live under tapedeck:limits


def test_another_participant_is_unaffected_and_the_window_reopens(limited_app, rc):
    room = Room(limited_app)
    next_seq = exhaust(room, "alice", rc)
    assert room.put("bob", 1).status_code == 202
    assert room.post("bob", 2).status_code == 202
    wait_until(lambda: room.put("alice", next_seq).status_code == 202, 10, interval=0.2, what="alice's next window")


def test_token_is_checked_before_the_rate_and_the_rate_before_the_body(limited_app, rc):
    room = Room(limited_app)
    for _attempt in range(5):
        exhaust(room, "alice", rc)
        no_token = room.put("alice", 50, headers={"Content-Type": "application/octet-stream"})
        bad_body = room.client.post("/video-calls/chunks/upload", data=b"{not json", headers=room.auth("alice"))
        if bad_body.status_code == 429:
            break
    assert no_token.status_code == 401 and no_token.get_json()["error"]["code"] == "unauthorized"
    assert bad_body.status_code == 429, bad_body.get_json()


def test_invalid_rate_fails_start_up_naming_the_variable(stack_env):
    from app import create_app
    from workers.errors import ConfigurationError

    for value in ("lots", "0/second", "5/fortnight"):
        with pytest.raises(ConfigurationError, match="CHUNK_RATE_LIMIT"):
            create_app({**stack_env, "CHUNK_RATE_LIMIT": value})


def test_redis_down_is_503_from_intake_not_500(stack_env, caplog):
    from app import create_app
    from app.auth import mint_token

    dead = create_app({**stack_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "CHUNK_RATE_LIMIT": RATE})
    headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'r1', 'alice', 'participant')}",
               "Content-Type": "application/octet-stream"}
    with caplog.at_level(logging.WARNING):
        response = dead.test_client().put("/video-calls/recordings/rec_1/participants/alice/video/chunks/1",
                                          data=b"media", headers=headers)
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "unavailable" and response.headers["Retry-After"]
    assert any("in-memory" in record.getMessage() for record in caplog.records)
