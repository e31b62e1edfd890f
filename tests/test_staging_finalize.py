"""Finalize and retention on object-store staging in both buckets (S3 on moto, GCS on its emulator), in-process
against the session's Redis: the same chunks give the same packets as from local staging, and beat's cleanup deletes
the bucket's staged chunks only once the retention has passed."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import av
import pytest
import requests

from tests.conftest import JWT_SECRET
from tests.media import Recording, encode_webm, slice_timeslice
from workers.chunk_index import ChunkRecord
from workers.maintenance.staging_cleanup import cleanup_staging
from workers.resources import Resources
from workers.settings import Settings


@pytest.fixture(scope="module")
def pieces() -> list[bytes]:
    return slice_timeslice(encode_webm(Recording(seconds=2.0)), 5)


def node(redis_server, tmp_path: Path, storage_env, provider: str, staging: str) -> Resources:
    """One process's resources: outputs in `provider`'s bucket, chunks staged as `staging` says."""
    env = {**storage_env(provider), "TAPEDECK_ENV": "development", "JWT_SECRET": JWT_SECRET,
           "REDIS_URL": redis_server.url, "STAGING_BACKEND": staging, "STAGING_DIR": str(tmp_path / f"{staging}-disk"),
           "STAGING_MIN_FREE_BYTES": "0", "FINALIZE_GRACE_SECONDS": "0", "UPLOAD_RETRY_BASE_SECONDS": "0.05"}
    if provider == "s3":
        env["S3_PREFIX"] = f"fin-{uuid.uuid4().hex[:8]}"
    return Resources.build(Settings.from_env(env), env)


def record(res: Resources, pieces: list[bytes]) -> str:
    """Start, stage and index every chunk as intake does, then stop with no grace period."""
    room, recording_id = f"room-{uuid.uuid4().hex[:8]}", f"rec_{uuid.uuid4().hex}"
    res.store.start(room, recording_id, "webm", {})
    for sequence, piece in enumerate(pieces):
        staged = res.staging.stage(recording_id, "alice", "video", sequence, piece)
        outcome, _ = res.store.accept_chunk(recording_id, "alice", "video", sequence,
                                            ChunkRecord(digest=staged.digest, size=staged.size, timestamp=None,
                                                        name=staged.name), container_ok=True, header=sequence == 0)
        assert outcome == "stored"
    res.store.stop(room, 0, task_id=str(uuid.uuid4()))
    return recording_id


def output_key(res: Resources, recording_id: str) -> str:
    return json.loads(res.store.get(recording_id)["outputs"])[0]["key"]


def output_packets(res: Resources, recording_id: str, directory: Path) -> list[tuple[str, int | None, int]]:
    """The stored output, fetched through its download URL as a player would, demuxed."""
    path = directory / f"{uuid.uuid4().hex[:6]}.webm"
    path.write_bytes(requests.get(res.provider.download_url(output_key(res, recording_id), 600), timeout=30).content)
    with av.open(str(path)) as container:
        return [(p.stream.type, p.pts, p.size) for p in container.demux() if p.size]


@pytest.mark.parametrize("provider", ["s3", "gcs"])
def test_finalize_from_the_bucket_gives_the_packets_of_local_staging(provider, redis_server, tmp_path, storage_env, pieces):
    remote = node(redis_server, tmp_path, storage_env, provider, "object-store")
    local = node(redis_server, tmp_path, storage_env, provider, "local")
    fetched = record(remote, pieces)
    assert remote.finalizer.run(fetched) == "completed", remote.store.get(fetched)
    on_disk = record(local, pieces)
    assert local.finalizer.run(on_disk) == "completed", local.store.get(on_disk)
    got = output_packets(remote, fetched, tmp_path)
    assert got == output_packets(local, on_disk, tmp_path) and got
    assert not (tmp_path / "object-store-disk" / fetched).exists()  # scratch copies dropped once completed
    assert len(list(remote.staging.scan(fetched))) == len(pieces)  # staged chunks wait for the retention


@pytest.mark.parametrize("provider", ["s3", "gcs"])
def test_beat_cleanup_deletes_the_bucket_chunks_only_after_retention(provider, redis_server, tmp_path, storage_env,
                                                                     pieces):
    res = node(redis_server, tmp_path, storage_env, provider, "object-store")
    recording_id = record(res, pieces)
    assert res.finalizer.run(recording_id) == "completed"
    completed, key = float(res.store.get(recording_id)["completedAt"]), output_key(res, recording_id)
    assert recording_id not in cleanup_staging(res.store, res.staging, 3600, now=completed + 3599)
    assert len(list(res.staging.scan(recording_id))) == len(pieces)
    assert recording_id in cleanup_staging(res.store, res.staging, 3600, now=completed + 3601)
    assert list(res.staging.scan(recording_id)) == [] and res.staging.recall(recording_id) is None
    assert res.provider.exists(key)  # the recording itself stays
