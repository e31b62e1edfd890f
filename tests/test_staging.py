"""The staging interface on each backend (local disk, the object store on S3 and on GCS): content names, durable
put, streamed read, list, delete, descriptor, and finalize's local copies."""
from __future__ import annotations

import hashlib
import uuid

import pytest

from storage_providers import create_provider
from workers.errors import ConfigurationError, InvalidRequest, Unavailable
from workers.staging import ChunkStaging, ObjectStoreStaging, Staging, create_staging


@pytest.fixture
def rid() -> str:
    """A recording id of the test's own: the emulated buckets live for the whole session."""
    return f"rec_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3", "gcs"])
def staging(request, tmp_path, storage_env) -> Staging:
    """One backend per run; object-store runs get a bucket prefix of their own (S3_PREFIX / fresh ids)."""
    if request.param == "local":
        return ChunkStaging(tmp_path / "staging")
    env = storage_env(request.param)
    if request.param == "s3":
        env["S3_PREFIX"] = f"t-{uuid.uuid4().hex[:8]}"
    return ObjectStoreStaging(create_provider(env=env), tmp_path / "scratch")


def test_local_backend_is_a_staging(staging):
    assert isinstance(staging, Staging)


def test_a_chunk_is_named_by_its_content_and_a_twin_rewrites_the_same_name(staging, rid):
    data = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40
    first = staging.stage(rid, "alice", "video", 3, data)
    twin = staging.stage(rid, "alice", "video", 3, data)
    assert first.name == twin.name == f"00000003-{hashlib.sha256(data).hexdigest()}.chunk"
    assert first.size == len(data)
    other = staging.stage(rid, "alice", "video", 3, data + b"x")
    assert other.name != first.name
    with staging.open_chunk(rid, "alice", "video", first.name) as handle:
        assert handle.read(4) == data[:4]
        assert handle.read() == data[4:]


def test_scan_lists_chunks_in_participant_type_sequence_order(staging, rid):
    for pid, kind, seq in [("bob", "audio", 1), ("alice", "video", 10), ("alice", "video", 2), ("alice", "audio", 0)]:
        staging.stage(rid, pid, kind, seq, f"{pid}{kind}{seq}".encode())
    staging.stage(rid + "b", "alice", "video", 0, b"another recording")
    found = [(f.participant_id, f.stream_type, f.sequence) for f in staging.scan(rid)]
    assert found == [("alice", "audio", 0), ("alice", "video", 2), ("alice", "video", 10), ("bob", "audio", 1)]


def test_delete_one_chunk_then_the_recording(staging, rid):
    kept = staging.stage(rid, "alice", "video", 0, b"kept")
    gone = staging.stage(rid, "alice", "video", 1, b"gone")
    staging.delete_chunk(rid, "alice", "video", gone.name)
    staging.delete_chunk(rid, "alice", "video", gone.name)  # a missing chunk is not an error
    assert [f.sequence for f in staging.scan(rid)] == [0]
    staging.remember(rid, {"recordingId": rid, "room": "r"})
    staging.remove_recording(rid)
    assert list(staging.scan(rid)) == [] and staging.recall(rid) is None
    assert kept.name.startswith("00000000-")


def test_descriptor_round_trips(staging, rid):
    facts = {"recordingId": rid, "room": "r", "format": "webm", "pauses": [[1.0, 2.0]]}
    staging.remember(rid, facts)
    assert staging.recall(rid) == facts
    assert staging.recall(rid + "x") is None


def test_ids_are_checked_before_any_path_is_built(staging, tmp_path, rid):
    with pytest.raises(InvalidRequest):
        staging.stage("../etc", "alice", "video", 0, b"x")
    with pytest.raises(InvalidRequest):
        staging.stage(rid, "alice", "subtitles", 0, b"x")
    assert not (tmp_path / "staging").exists() and not (tmp_path / "scratch").exists()


def test_local_chunks_give_files_in_sequence_order_and_none_for_a_lost_or_resized_one(staging, tmp_path, rid):
    datas = {seq: bytes([seq]) * (1000 + seq) for seq in range(20)}
    names = {seq: staging.stage(rid, "alice", "video", seq, data).name for seq, data in datas.items()}
    staging.delete_chunk(rid, "alice", "video", names[7])
    wanted = [(seq, names[seq], len(datas[seq]) + (1 if seq == 9 else 0)) for seq in range(20)]
    got = staging.local_chunks(rid, "alice", "video", wanted)
    assert [seq for seq, _ in got] == list(range(20))
    assert [seq for seq, path in got if path is None] == [7, 9]
    assert all(path.read_bytes() == datas[seq] for seq, path in got if path is not None)
    staging.release(rid, "alice")
    if isinstance(staging, ObjectStoreStaging):  # the worker's copies are gone, the staged chunks are not
        assert not any(path.exists() for _, path in got if path is not None)
    assert len(list(staging.scan(rid))) == 19


def test_finished_keeps_the_staged_chunks_for_retention(staging, rid):
    staged = staging.stage(rid, "alice", "video", 0, b"header")
    staging.output_dir(rid).mkdir(parents=True, exist_ok=True)
    staging.finished(rid)
    assert [f.name for f in staging.scan(rid)] == [staged.name]


def test_object_store_staging_refuses_a_provider_without_a_bucket(tmp_path):
    local = create_provider(env={"STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(tmp_path / "out")})
    with pytest.raises(ConfigurationError, match="STORAGE_PROVIDER s3 or gcs"):
        create_staging("object-store", tmp_path / "scratch", 0, local)
    assert isinstance(create_staging("local", tmp_path / "staging", 0, local), ChunkStaging)


def test_an_unreachable_bucket_is_503_and_a_cleanup_delete_does_not_raise(tmp_path, storage_env, rid):
    env = {**storage_env("s3"), "S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    staging = ObjectStoreStaging(create_provider(env=env), tmp_path / "scratch")
    with pytest.raises(Unavailable):
        staging.stage(rid, "alice", "video", 0, b"header")
    name = staging.chunk_name(0, hashlib.sha256(b"header").hexdigest())
    staging.delete_chunk(rid, "alice", "video", name)  # best effort: a rejection's 409 never becomes a 500


def test_temp_names_are_unique_in_a_process_and_a_forked_child_draws_its_own_tag(tmp_path):
    """Staging's temp names come from a tag per process and a counter: a forked web worker must not share its
    parent's tag, or two workers writing the same chunk at once would meet at one temp name."""
    import multiprocessing

    from workers.staging import local

    names = {local._temp_tag() for _ in range(1000)}
    assert len(names) == 1000
    parent_tag = local._process_tag
    queue = multiprocessing.get_context("fork").SimpleQueue()
    child = multiprocessing.get_context("fork").Process(target=lambda: queue.put(local._temp_tag()))
    child.start()
    child.join(30)
    child_name = queue.get()
    assert not child_name.startswith(parent_tag) and child_name.endswith("-0")
