"""Faults a deployment meets (issue 9): Redis restarts, a flaky bucket, unwritable staging, racing and
lost-reply retries. Each recording must still end as one complete output per participant, produced once."""
from __future__ import annotations

import threading
import uuid
from urllib.parse import urlsplit

import pytest

from tests.fault_proxy import S3_ERROR, FaultProxy
from tests.fault_stack import JWT_SECRET, Answer, FaultStack, call, start_fault_stack
from tests.media import Probe, Recording, encode_webm, probe, slice_timeslice
from tests.storage_servers import s3_client

CHUNKS = 6
FRAME_TOLERANCE = 1
DURATION_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[list[bytes], Probe]:
    """A 3 s VP8+Opus recording sliced like MediaRecorder's timeslice mode, and what it decodes to."""
    data = encode_webm(Recording(seconds=3.0))
    whole = tmp_path_factory.mktemp("fault-media") / "input.webm"
    whole.write_bytes(data)
    return slice_timeslice(data, CHUNKS), probe(whole)


@pytest.fixture(scope="module")
def stack(moto_server, tmp_path_factory):
    s3_proxy = FaultProxy(upstream_port=urlsplit(moto_server["S3_ENDPOINT_URL"]).port or 80).start()
    stack = start_fault_stack(tmp_path_factory.mktemp("fault-stack"), moto_server, s3_proxy, s3_client(moto_server))
    yield stack
    stack.stop()


@pytest.fixture
def room() -> str:
    return f"fault-{uuid.uuid4().hex[:10]}"


def upload(stack: FaultStack, room: str, recording_id: str, participant: str, pieces: list[bytes], sequences) -> None:
    for sequence in sequences:
        answer = stack.put(room, recording_id, participant, sequence, pieces[sequence])
        assert answer.status == 202, answer


def assert_complete(stack: FaultStack, room: str, recording_id: str, body: dict, participants: list[str],
                    expected: Probe) -> None:
    """Completed, nothing missing, one whole output per participant, and nothing else in the bucket."""
    assert body["state"] == "completed", body
    assert sorted(o["participantId"] for o in body["outputs"]) == sorted(participants)
    for participant in participants:
        video = body["participants"][participant]["video"]
        assert video["chunks"] == CHUNKS and video["missing"] == [] and video["missingCount"] == 0, video
        got = stack.probe_output(body, participant)
        for kind, count in expected.frames.items():
            assert abs(got.frames.get(kind, 0) - count) <= FRAME_TOLERANCE, (participant, got.frames, expected.frames)
        assert abs(got.duration - expected.duration) <= DURATION_TOLERANCE, (got.duration, expected.duration)
    prefix = f"recordings/{room}/{recording_id}/"
    expected_keys = [f"{prefix}{p}.{ext}" for p in participants for ext in ("webm", "jpg")] + [f"{prefix}manifest.json"]
    assert stack.objects(room, recording_id) == sorted(expected_keys)


def test_redis_restart_between_uploads_loses_nothing_acknowledged(stack, media, room):
    pieces, expected = media
    participants = ["alice", "bob"]
    recording_id = stack.start(room)
    for participant in participants:
        upload(stack, room, recording_id, participant, pieces, range(CHUNKS // 2))
    stack.redis.restart()  # AOF on: every 202 so far must survive
    for participant in participants:
        upload(stack, room, recording_id, participant, pieces, range(CHUNKS // 2, CHUNKS))
    body = stack.stop_and_wait(room, recording_id)
    assert_complete(stack, room, recording_id, body, participants, expected)


def test_transient_storage_failures_are_retried_into_one_object(stack, media, room):
    pieces, expected = media
    recording_id = stack.start(room)
    upload(stack, room, recording_id, "alice", pieces, range(CHUNKS))
    is_put = lambda r: r.method == "PUT" and r.path.startswith(f"/{stack.bucket}/recordings/{room}/")  # noqa: E731
    stack.s3_proxy.fail_when(is_put, times=3, status=500, content_type="application/xml", body=S3_ERROR)
    body = stack.stop_and_wait(room, recording_id)
    assert stack.s3_proxy.pending_faults == 0, "the storage faults were never hit"
    assert_complete(stack, room, recording_id, body, ["alice"], expected)


def test_unwritable_staging_answers_503_and_stores_nothing(stack, media, room, tmp_path):
    from app import create_app

    pieces, expected = media
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"a regular file: nothing can be created under it (ENOTDIR, even as root)")
    broken = create_app({**stack.env, "REDIS_URL": stack.redis.url, "STAGING_DIR": str(blocker / "staging")})
    client = broken.test_client()
    recording_id = stack.start(room)
    alice = stack.token(room, "alice", "participant")
    response = client.put(urlsplit(stack.chunk_url(recording_id, "alice", 0)).path, data=pieces[0],
                          headers={"Authorization": f"Bearer {alice}", "Content-Type": "application/octet-stream"})
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert "alice" not in stack.status(room, recording_id).get("participants", {})  # nothing reported stored

    upload(stack, room, recording_id, "alice", pieces, range(CHUNKS))  # the client's retries, to a healthy node
    body = stack.stop_and_wait(room, recording_id)
    assert_complete(stack, room, recording_id, body, ["alice"], expected)


def race(stack: FaultStack, room: str, recording_id: str, participant: str, sequence: int,
         bodies: tuple[bytes, bytes]) -> list[Answer]:
    """Two clients PUT one sequence at the same instant, each on its own connection."""
    barrier, answers = threading.Barrier(2), [None, None]

    def client(index: int) -> None:
        barrier.wait()
        answers[index] = stack.put(room, recording_id, participant, sequence, bodies[index], retry=False)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers  # type: ignore[return-value]


def test_two_clients_racing_one_sequence_store_it_once(stack, media, room):
    pieces, expected = media
    participants = ["p0", "p1", "p2"]
    recording_id = stack.start(room)
    for participant in participants:
        for sequence, piece in enumerate(pieces):
            answers = race(stack, room, recording_id, participant, sequence, (piece, piece))
            assert [a.status for a in answers] == [202, 202], answers
            assert sorted(a.body["duplicate"] for a in answers) == [False, True], answers
    body = stack.stop_and_wait(room, recording_id)
    assert_complete(stack, room, recording_id, body, participants, expected)


def test_two_clients_racing_different_bytes_one_wins(stack, media, room):
    pieces, _ = media
    recording_id = stack.start(room)
    assert stack.put(room, recording_id, "alice", 0, pieces[0]).status == 202
    for sequence in range(1, CHUNKS):
        other = bytes(b ^ 0xFF for b in pieces[sequence])
        answers = race(stack, room, recording_id, "alice", sequence, (pieces[sequence], other))
        assert sorted(a.status for a in answers) == [202, 409], answers
        [loser] = [a for a in answers if a.status == 409]
        assert loser.body["error"]["code"] == "sequence_conflict"
    video = stack.status(room, recording_id)["participants"]["alice"]["video"]
    assert video["chunks"] == CHUNKS and video["missing"] == []


def test_retry_after_a_lost_commit_reply_keeps_the_chunk(stack, media, room):
    """Redis commits the chunk but the reply is lost: the retry is a duplicate and the chunk must be in the output."""
    pieces, expected = media
    recording_id = stack.start(room)
    upload(stack, room, recording_id, "alice", pieces, range(2))
    stack.redis_proxy.lose_script_reply(recording_id.encode())
    lost = stack.put(room, recording_id, "alice", 2, pieces[2], retry=False)
    assert stack.redis_proxy.lost_replies == 1, "the proxy never cut a committed reply"
    assert lost.status in (202, 503), lost
    retry: list[Answer] = []
    answer = stack.put(room, recording_id, "alice", 2, pieces[2], answers=retry)
    assert answer.status == 202 and answer.body["duplicate"] is True, retry
    upload(stack, room, recording_id, "alice", pieces, range(3, CHUNKS))
    body = stack.stop_and_wait(room, recording_id)
    assert_complete(stack, room, recording_id, body, ["alice"], expected)
