"""Intake's fast path (one Redis round trip per chunk) keeps every promise of the slow one: the rate window is
counted by the accept script, a refused retry never loses an acknowledged chunk, and a recording's remembered
room never lets a chunk through for a recording Redis no longer knows."""
from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.rate_room import Room, window_pattern

LIMIT = 3
RATE = f"{LIMIT}/minute"
"""A window far longer than any test step, so nothing here depends on timing."""


@pytest.fixture(scope="module")
def minute_app(stack_env):
    from app import create_app

    return create_app({**stack_env, "CHUNK_RATE_LIMIT": RATE})


@pytest.fixture
def rc(stack_env) -> redis.Redis:
    return redis.Redis.from_url(stack_env["REDIS_URL"])


def staged(stack_env, rec: str) -> list[Path]:
    root = Path(stack_env["STAGING_DIR"]) / rec
    return sorted(p for p in root.rglob("*.chunk")) if root.exists() else []


def window_count(rc: redis.Redis, room: Room, sub: str) -> int:
    found = rc.keys(window_pattern(room, sub))
    assert len(found) == 1, found
    return int(rc.get(found[0]))


def test_a_refused_retry_of_an_acknowledged_chunk_keeps_its_file_and_index(minute_app, stack_env, rc):
    from workers import keys

    room = Room(minute_app)
    assert [room.put("alice", n).status_code for n in range(1, LIMIT + 1)] == [202] * LIMIT
    files = staged(stack_env, room.rec)
    assert len(files) == LIMIT
    retry = room.put("alice", LIMIT)  # the same bytes again, over the limit: refused by the accept script
    assert retry.status_code == 429 and retry.get_json()["error"]["code"] == "rate_limited", retry.get_json()
    assert 1 <= int(retry.headers["Retry-After"]) <= 60
    assert staged(stack_env, room.rec) == files
    assert all(f.read_bytes().startswith(b"media-") for f in files)
    assert rc.hexists(keys.stream_chunks(room.rec, "alice", "video"), str(LIMIT))


def test_a_new_chunk_over_the_limit_is_429_and_leaves_nothing(minute_app, stack_env, rc):
    from workers import keys

    room = Room(minute_app)
    assert [room.put("alice", n).status_code for n in range(1, LIMIT + 1)] == [202] * LIMIT
    files = staged(stack_env, room.rec)
    refused = room.put("alice", LIMIT + 1)
    assert refused.status_code == 429, refused.get_json()
    assert staged(stack_env, room.rec) == files
    assert not rc.hexists(keys.stream_chunks(room.rec, "alice", "video"), str(LIMIT + 1))
    assert room.put("bob", 1).status_code == 202  # another participant's window is its own


def test_every_request_counts_once_whether_or_not_it_reaches_the_commit(minute_app, rc):
    room = Room(minute_app)
    assert room.put("alice", 1).status_code == 202  # counted by the accept script
    forbidden = room.put("alice", 2, path_sub="bob")  # ends before the commit: counted afterwards
    assert forbidden.status_code == 403, forbidden.get_json()
    assert window_count(rc, room, "alice") == 2
    assert room.put("alice", 2).status_code == 202
    assert window_count(rc, room, "alice") == LIMIT
    over = room.put("alice", 3, path_sub="bob")  # over the limit: 429 wins over the 403 (DESIGN: rate before ids)
    assert over.status_code == 429, over.get_json()
    assert window_count(rc, room, "alice") == LIMIT + 1


def test_once_refused_the_process_refuses_without_counting_again(minute_app, stack_env, rc):
    room = Room(minute_app)
    assert [room.put("alice", n).status_code for n in range(1, LIMIT + 1)] == [202] * LIMIT
    assert room.put("alice", LIMIT + 1).status_code == 429
    counted = window_count(rc, room, "alice")
    files = staged(stack_env, room.rec)
    for sequence in range(LIMIT + 1, LIMIT + 4):
        refused = room.put("alice", sequence)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert window_count(rc, room, "alice") == counted  # refused in the process: no Redis, no disk
    assert staged(stack_env, room.rec) == files


def test_a_recording_redis_forgot_is_404_even_with_its_room_remembered_and_its_files_stay(minute_app, stack_env, rc):
    from workers import keys

    room = Room(minute_app)
    assert room.put("alice", 1).status_code == 202  # the room is now remembered by this process
    files = staged(stack_env, room.rec)
    rc.delete(keys.recording(room.rec))  # Redis lost it (restart without persistence): `rebuild` needs the files
    again = room.put("alice", 1)  # the client's retry of its acknowledged chunk
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "not_found", again.get_json()
    assert room.put("alice", 2).status_code == 404
    assert staged(stack_env, room.rec) == files and files[0].read_bytes() == b"media-1"
