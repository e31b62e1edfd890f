"""Beat housekeeping of storage and Redis: orphaned multipart uploads aborted by state (moto server), and finished
recordings compacted to the summary their status shows."""
from __future__ import annotations

import time

import pytest

from tests.media import Recording, encode_webm, slice_timeslice
from tests.storage_servers import BUCKET, s3_client
from workers import keys
from workers.checkpoints import RedisCheckpoint
from workers.maintenance.compaction import compact, compact_finished
from workers.maintenance.uploads import abort_checkpointed, abort_listed, recording_of
from workers.state import RecordingStore, State

T0 = 1_800_000_000.0


def _uploads(s3) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])}


def test_recording_of_reads_only_recording_keys():
    assert recording_of("recordings/room1/rec_a/alice.webm") == "rec_a"
    assert recording_of("recordings/room1/alice.webm") is None
    assert recording_of("staging/rec_a/alice/video/1") is None


def test_orphaned_uploads_are_aborted_by_state_never_a_live_one(private_redis, moto_server, make_provider):
    provider, s3 = make_provider("s3"), s3_client(moto_server)
    store = RecordingStore(private_redis)
    for name in ("done", "live", "locked"):
        store.start(f"room-{name}", f"rec_{name}", "webm", {})
    store.finish("rec_done", State.COMPLETED)
    store.finish("rec_locked", State.FAILED)
    private_redis.set(keys.finalize_lock("rec_locked"), "held", ex=60)  # an operator's requeue is running
    started = {}
    for name in ("done", "live", "gone", "locked"):
        key = f"recordings/room-{name}/rec_{name}/alice.webm"
        started[name] = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    outside = s3.create_multipart_upload(Bucket=BUCKET, Key="elsewhere/rec_gone/x.bin")["UploadId"]
    for name in ("done", "live"):
        key = f"recordings/room-{name}/rec_{name}/alice.webm"
        RedisCheckpoint(private_redis, f"rec_{name}", key).save(
            {"provider": "s3", "bucket": BUCKET, "key": key, "upload_id": started[name], "parts": []})
    try:
        assert abort_checkpointed(private_redis, provider) == ["recordings/room-done/rec_done/alice.webm"]
        assert private_redis.get(keys.upload_session("rec_done", "recordings/room-done/rec_done/alice.webm")) is None
        assert private_redis.get(keys.upload_session("rec_live", "recordings/room-live/rec_live/alice.webm"))
        initiated = max(u["Initiated"].timestamp() for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"])
        young = initiated + 60  # moto stamps every upload with one fixed date: judge the age from it
        assert abort_listed(private_redis, provider, min_age_seconds=3600, now=young) == []  # too young to judge
        assert abort_listed(private_redis, provider, min_age_seconds=0) == ["recordings/room-gone/rec_gone/alice.webm"]
        assert _uploads(s3) == {"recordings/room-live/rec_live/alice.webm",
                                "recordings/room-locked/rec_locked/alice.webm", "elsewhere/rec_gone/x.bin"}
        assert abort_checkpointed(private_redis, provider) == []  # idempotent
    finally:
        for key, upload_id in ((f"recordings/room-{n}/rec_{n}/alice.webm", started[n]) for n in ("live", "locked")):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        s3.abort_multipart_upload(Bucket=BUCKET, Key="elsewhere/rec_gone/x.bin", UploadId=outside)


def test_compacted_recording_shows_the_same_status_with_one_key_left(api, rec, worker, app):
    from app.services import services

    pieces = slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)
    for sequence, piece in enumerate(pieces):
        if sequence != 2:  # a hole the summary must keep
            assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
    assert api.stop().status_code == 202
    before = api.wait_final(rec)
    assert before["state"] == "completed" and before["participants"]["alice"]["video"]["missing"] == [2]
    with app.app_context():
        store = services().store
    assert list(store.redis.scan_iter(match=keys.recording_keys_pattern(rec)))

    assert compact(store, rec, time.time()) is True
    assert list(store.redis.scan_iter(match=keys.recording_keys_pattern(rec))) == []
    after = api.status(rec).get_json()
    assert {k: v for k, v in after.items() if k != "outputs"} == {k: v for k, v in before.items() if k != "outputs"}
    assert [o["key"] for o in after["outputs"]] == [o["key"] for o in before["outputs"]]
    alice = api.client.get(f"/video-calls/recordings/{rec}", headers=api.auth("alice", "participant")).get_json()
    assert list(alice["participants"]) == ["alice"]
    assert compact(store, rec, time.time()) is False  # once


def test_compaction_takes_only_long_completed_recordings_once(private_redis):
    store = RecordingStore(private_redis)
    ids = {}
    for name in ("old", "failed", "young"):
        _, ids[name] = store.start(f"room-{name}", f"rec_{name}", "webm", {}, now=T0)
        private_redis.hset(keys.stream_stats(ids[name], "alice", "video"), mapping={"chunks": 1, "bytes": 5})
        private_redis.sadd(keys.streams(ids[name]), "alice/video")
        store.finish(ids[name], State.FAILED if name == "failed" else State.COMPLETED)
    private_redis.zadd(keys.ended_index(), {ids["old"]: T0, ids["failed"]: T0 + 1, ids["young"]: T0 + 5000})

    assert compact_finished(store, 3600, now=T0 + 4000) == [ids["old"]]
    assert compact_finished(store, 3600, now=T0 + 4000) == []
    assert store.get(ids["failed"]).get("compactedAt") is None  # an operator may still requeue it
    assert private_redis.exists(keys.stream_stats(ids["failed"], "alice", "video"))
    assert not private_redis.exists(keys.stream_stats(ids["old"], "alice", "video"))
    assert compact_finished(store, 3600, now=T0 + 9000) == [ids["young"]]


def test_maintenance_key_strings():
    assert keys.active_recordings() == "tapedeck:active"
    assert keys.compaction_watermark() == "tapedeck:maintenance:compacted-until"
    assert keys.all_upload_sessions_pattern() == "tapedeck:upload:*"
    assert keys.celery_queue("finalize") == "finalize"
    session = keys.upload_session("rec_a", "recordings/r/rec_a/alice.webm")
    assert keys.upload_session_parts(session) == ("rec_a", "recordings/r/rec_a/alice.webm")
    assert keys.upload_session_parts("tapedeck:upload:no-key") is None
    assert keys.upload_session_parts(keys.recording("rec_a")) is None


def test_gcs_sessions_checkpointed_for_a_final_recording_are_cancelled(private_redis, make_provider):
    provider = make_provider("gcs")
    store = RecordingStore(private_redis)
    for name in ("done", "live"):
        store.start(f"room-{name}", f"rec_{name}", "webm", {})
    store.finish("rec_done", State.COMPLETED)
    bucket = provider.client.bucket(provider.settings.bucket)
    for name in ("done", "live"):
        key = f"recordings/room-{name}/rec_{name}/alice.webm"
        url = bucket.blob(key).create_resumable_upload_session(content_type="video/webm", size=10 * 1024 * 1024)
        RedisCheckpoint(private_redis, f"rec_{name}", key).save(
            {"provider": "gcs", "bucket": provider.settings.bucket, "key": key, "session_url": url, "confirmed": 0})

    assert abort_checkpointed(private_redis, provider) == ["recordings/room-done/rec_done/alice.webm"]
    assert private_redis.get(keys.upload_session("rec_done", "recordings/room-done/rec_done/alice.webm")) is None
    assert private_redis.get(keys.upload_session("rec_live", "recordings/room-live/rec_live/alice.webm"))
    assert abort_listed(private_redis, provider, min_age_seconds=0) == []  # GCS lists no sessions: Redis is the record
