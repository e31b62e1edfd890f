"""Finalize scratch a killed worker left on object-store staging (issue 14): STAGING_DIR/<rec>/_fetched holds a
whole recording's copy and only finished() removed it. Worker start and beat's cleanup now sweep the folders of
recordings that are completed, failed or gone and that no finalize lock holds; nothing else is touched."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET
from tests.services import CeleryProcess, wait_until
from tests.test_staging_finalize import node, pieces, record  # noqa: F401 - pieces is a fixture
from workers import keys
from workers.lock import heartbeat_lock
from workers.maintenance.staging_cleanup import cleanup_staging
from workers.staging.sweep import sweep_scratch
from workers.state import State


def fetched_copy(res, recording_id: str) -> Path:
    """What a finalize killed after fetching leaves: the stream's chunks copied onto this disk."""
    wanted = [(seq, chunk.name, chunk.size)
              for seq, chunk in sorted(res.store.chunks(recording_id, "alice", "video").items())]
    copies = res.staging.local_chunks(recording_id, "alice", "video", wanted)
    assert copies and all(path is not None and path.stat().st_size > 0 for _, path in copies)
    return res.staging.scratch / recording_id


@pytest.fixture
def res(redis_server, tmp_path, storage_env):
    return node(redis_server, tmp_path, storage_env, "s3", "object-store")


def test_sweep_removes_only_scratch_of_recordings_that_are_over_and_unlocked(res, pieces):  # noqa: F811
    completed = record(res, pieces)
    assert res.finalizer.run(completed) == "completed"
    failed, gone, finalizing, locked = (record(res, pieces) for _ in range(4))
    res.store.finish(failed, State.FAILED, error="killed")
    res.store.finish(locked, State.FAILED, error="killed")
    res.redis.delete(keys.recording(gone))  # what DELETE leaves, or a Redis that forgot it
    recording = f"rec_{uuid.uuid4().hex}"
    res.store.start(f"room-{uuid.uuid4().hex[:8]}", recording, "webm", {})
    folders = {rid: fetched_copy(res, rid) for rid in (completed, failed, finalizing, locked)}
    folders[gone] = res.staging.scratch / gone
    (folders[gone] / "_fetched" / "alice" / "video").mkdir(parents=True)
    (folders[gone] / "_fetched" / "alice" / "video" / "00000000-ab.chunk").write_bytes(pieces[0])
    folders[recording] = res.staging.output_dir(recording)
    folders[recording].mkdir(parents=True)
    with heartbeat_lock(res.redis, keys.finalize_lock(locked), 30) as held:
        assert held
        swept = sweep_scratch(res.store, res.staging)
        assert sorted(swept) == sorted([completed, failed, gone])
        assert not any(folders[rid].exists() for rid in swept)
        assert folders[finalizing].exists() and folders[locked].exists() and folders[recording].exists()
    assert sweep_scratch(res.store, res.staging) == [locked]  # released: the requeue is over
    assert folders[finalizing].exists() and folders[recording].exists()
    assert len(list(res.staging.scan(failed))) == len(pieces)  # staged chunks stay for a requeue


def test_beat_cleanup_sweeps_scratch_before_any_retention(res, pieces):  # noqa: F811
    recording_id = record(res, pieces)
    res.store.finish(recording_id, State.FAILED, error="worker killed")
    folder = fetched_copy(res, recording_id)
    assert cleanup_staging(res.store, res.staging, 10 * 86400) == []  # retention removes no staged chunk
    assert not folder.exists()
    assert len(list(res.staging.scan(recording_id))) == len(pieces)


def test_worker_start_sweeps_what_a_killed_worker_left(res, pieces, redis_server, storage_env, tmp_path):  # noqa: F811
    over, active = record(res, pieces), record(res, pieces)
    res.store.finish(over, State.COMPLETED)
    left, kept = fetched_copy(res, over), fetched_copy(res, active)
    env = {**os.environ, **storage_env("s3"), "S3_PREFIX": "sweep", "TAPEDECK_ENV": "development",
           "JWT_SECRET": JWT_SECRET, "REDIS_URL": redis_server.url,
           "STAGING_BACKEND": "object-store", "STAGING_DIR": str(res.staging.scratch)}
    worker = CeleryProcess(env, tmp_path / "worker.log", "worker", "-Q", f"sweep-{uuid.uuid4().hex[:6]}")
    try:
        worker.wait_ready()
        wait_until(lambda: not left.exists(), 30, what="leftover scratch swept at worker start")
        assert kept.exists() and any(kept.rglob("*.chunk"))  # the recording still finalizing keeps its copy
    finally:
        worker.stop()
