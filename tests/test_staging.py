"""The staging interface on the local backend: content names, durable put, streamed read, list, delete, descriptor."""
from __future__ import annotations

import hashlib

import pytest

from workers.errors import InvalidRequest
from workers.staging import ChunkStaging, Staging


@pytest.fixture
def staging(tmp_path) -> Staging:
    return ChunkStaging(tmp_path / "staging")


def test_local_backend_is_a_staging(staging):
    assert isinstance(staging, Staging)


def test_a_chunk_is_named_by_its_content_and_a_twin_rewrites_the_same_name(staging):
    data = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40
    first = staging.stage("rec_1", "alice", "video", 3, data)
    twin = staging.stage("rec_1", "alice", "video", 3, data)
    assert first.name == twin.name == f"00000003-{hashlib.sha256(data).hexdigest()}.chunk"
    assert first.size == len(data)
    other = staging.stage("rec_1", "alice", "video", 3, data + b"x")
    assert other.name != first.name
    with staging.open_chunk("rec_1", "alice", "video", first.name) as handle:
        assert handle.read(4) == data[:4]
        assert handle.read() == data[4:]


def test_scan_lists_chunks_in_participant_type_sequence_order(staging):
    for pid, kind, seq in [("bob", "audio", 1), ("alice", "video", 10), ("alice", "video", 2), ("alice", "audio", 0)]:
        staging.stage("rec_1", pid, kind, seq, f"{pid}{kind}{seq}".encode())
    staging.stage("rec_2", "alice", "video", 0, b"another recording")
    found = [(f.participant_id, f.kind, f.sequence) for f in staging.scan("rec_1")]
    assert found == [("alice", "audio", 0), ("alice", "video", 2), ("alice", "video", 10), ("bob", "audio", 1)]


def test_delete_one_chunk_then_the_recording(staging):
    kept = staging.stage("rec_1", "alice", "video", 0, b"kept")
    gone = staging.stage("rec_1", "alice", "video", 1, b"gone")
    staging.delete_chunk("rec_1", "alice", "video", gone.name)
    staging.delete_chunk("rec_1", "alice", "video", gone.name)  # a missing chunk is not an error
    assert [f.sequence for f in staging.scan("rec_1")] == [0]
    staging.remember("rec_1", {"recordingId": "rec_1", "room": "r"})
    staging.remove_recording("rec_1")
    assert list(staging.scan("rec_1")) == [] and staging.recall("rec_1") is None
    assert kept.name.startswith("00000000-")


def test_descriptor_round_trips(staging):
    facts = {"recordingId": "rec_1", "room": "r", "format": "webm", "pauses": [[1.0, 2.0]]}
    staging.remember("rec_1", facts)
    assert staging.recall("rec_1") == facts
    assert staging.recall("rec_nope") is None


def test_ids_are_checked_before_any_path_is_built(staging, tmp_path):
    with pytest.raises(InvalidRequest):
        staging.stage("../etc", "alice", "video", 0, b"x")
    with pytest.raises(InvalidRequest):
        staging.stage("rec_1", "alice", "subtitles", 0, b"x")
    assert not (tmp_path / "staging").exists()
