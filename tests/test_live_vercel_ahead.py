"""LIVE_FINALIZE on Vercel Blob: the output's parts that are final already are uploaded while the room records (Vercel's
multipart, any order, through the SDK's client); at stop finalize sends only the header's part 1 and the tail, and
completes. Checked on the Vercel Blob double from its request log and the stored bytes; an upload Vercel no longer
has, and a participant that goes to batch, get a whole upload instead."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import uuid

import pytest

from tests.conftest import Api
from tests.storage_fixtures import fetch
from tests.test_live import packets
from tests.test_live_flow import batch_packets, live_env  # noqa: F401 - live_env is a fixture, found by name
from tests.test_live_s3_ahead import (PART, big_recording, composite, record, record_mp4,  # noqa: F401 - fixture
                                      stored_live_mp4)
from tests.vercel_blob_double import VercelBlobDouble
from workers import keys
from workers.checkpoints import RedisCheckpoint
from workers.manifest import object_prefix
from workers.maintenance.uploads import abort_checkpointed
from workers.resources import Resources
from workers.settings import Settings
from workers.state import State


def build(env: dict[str, str]) -> Resources:
    resources = Resources.build(Settings.from_env(env), env)
    resources.finalizer.live.part_size = PART  # type: ignore[union-attr]
    return resources


@pytest.fixture
def vercel_live(live_env, vercel_blob_double, vercel_blob_store: VercelBlobDouble):  # noqa: F811
    from app import create_app

    env = {**live_env, **vercel_blob_double, "STORAGE_PART_SIZE": str(PART)}
    app = create_app(env)
    with vercel_blob_store.lock:
        vercel_blob_store.log.clear()
    yield Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}"), build(env), env
    vercel_blob_store.hold_action = None
    vercel_blob_store.released.set()
    vercel_blob_store.meet = None


def mpu(store: VercelBlobDouble) -> list[str]:
    """The multipart requests the double received, as action:part ("upload:3", "complete:")."""
    with store.lock:
        return [entry.removeprefix("/api/blob/mpu:") for _, entry in store.log if entry.startswith("/api/blob/mpu:")]


def since(store: VercelBlobDouble, mark: int) -> list[str]:
    return mpu(store)[mark:]


def stored_key(api: Api, rec: str) -> str:
    return f"{object_prefix(api.room, rec)}alice.webm"


def live_file(resources: Resources, rec: str):
    return resources.staging.output_dir(rec) / "live" / "alice.live.webm"


def test_parts_reach_vercel_while_recording_and_complete_into_the_live_output(vercel_live, big_recording,
                                                                             vercel_blob_store):
    api, resources, _ = vercel_live
    rec = record(api, resources, big_recording)
    key = stored_key(api, rec)
    pathname = resources.provider.pathname(key)  # type: ignore[attr-defined]
    before_stop = mpu(vercel_blob_store)
    assert before_stop[0] == "create:" and "upload:2" in before_stop  # sent while recording
    assert "upload:1" not in before_stop  # part 1 holds the header's space: it goes at stop
    assert pathname not in vercel_blob_store.blobs  # nothing visible before complete
    sent_ahead = {entry for entry in before_stop if entry.startswith("upload:")}

    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    after_stop = since(vercel_blob_store, len(before_stop))
    live = live_file(resources, rec)
    count = -(-live.stat().st_size // PART)
    assert "upload:1" in after_stop and after_stop[-1] == "complete:"
    assert not sent_ahead & set(after_stop)  # no part sent twice
    assert sent_ahead | set(after_stop[:-1]) == {f"upload:{n}" for n in range(1, count + 1)}
    assert "create:" not in after_stop  # the upload begun while recording was the one completed
    output = api.status(rec).get_json()["outputs"][0]
    data = fetch(resources.provider, output["key"])
    assert data == live.read_bytes()  # byte for byte, parts in order
    assert output["checksum"]["composite"] == composite(data, PART)
    assert RedisCheckpoint(resources.redis, rec, key).load() is None


def test_a_live_mp4_completes_the_upload_its_media_began(vercel_live, big_recording, vercel_blob_store):
    """`format: mp4`: the MP4's media parts go up while recording; at stop only part 1 (the header in front of the
    first media) and the tail are sent, and the upload begun while recording completes into the live file."""
    api, resources, _ = vercel_live
    rec = record_mp4(api, resources, big_recording)
    before_stop = mpu(vercel_blob_store)
    sent_ahead = {entry for entry in before_stop if entry.startswith("upload:")}
    assert before_stop[0] == "create:" and "upload:2" in sent_ahead and "upload:1" not in sent_ahead
    stored_live_mp4(api, resources, rec)
    after_stop = since(vercel_blob_store, len(before_stop))
    assert "upload:1" in after_stop and after_stop[-1] == "complete:" and "create:" not in after_stop
    assert not sent_ahead & set(after_stop)  # no part sent twice


def test_at_stop_part_one_and_the_tail_go_together(vercel_live, big_recording, vercel_blob_store):
    """Part 1 (the header's) and the tail's parts are in flight at once: the double holds the first two part
    uploads at a barrier, which breaks (and fails them) if they come one after another. Same bytes stored."""
    api, resources, _ = vercel_live
    rec = record(api, resources, big_recording)
    sent_ahead = {entry for entry in mpu(vercel_blob_store) if entry.startswith("upload:")}
    live = live_file(resources, rec)
    count = -(-live.stat().st_size // PART)
    assert count - len(sent_ahead) >= 2  # part 1 and at least one tail part are left for stop
    vercel_blob_store.met.clear()
    vercel_blob_store.meet = threading.Barrier(2, timeout=30)
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    assert 1 in vercel_blob_store.met and len(vercel_blob_store.met) == 2
    assert not vercel_blob_store.meet.broken
    output = api.status(rec).get_json()["outputs"][0]
    assert fetch(resources.provider, output["key"]) == live.read_bytes()
    assert output["checksum"]["composite"] == composite(live.read_bytes(), PART)


def _finalize_in_child(env: dict[str, str], rec: str) -> None:
    build(env).finalizer.run(rec)


@pytest.mark.parametrize("completed_before_crash", [False, True], ids=["before-complete", "after-complete"])
def test_a_finalize_killed_at_stop_is_retried_and_completes_once(vercel_live, big_recording, vercel_blob_store,
                                                                 completed_before_crash):
    """kill -9 of the finalizing process while its complete call is in flight; the retry (as recovery runs it)
    completes from the checkpoint. Vercel either never got the complete (the retry sends no part again, one
    complete) or did it (the retry's complete meets an unknown upload, and the file goes whole once more)."""
    api, resources, env = vercel_live
    rec = record(api, resources, big_recording)
    key = stored_key(api, rec)
    assert api.stop().status_code == 202
    vercel_blob_store.arrived.clear()
    vercel_blob_store.released.clear()
    vercel_blob_store.hold_action = "complete"
    child = multiprocessing.get_context("fork").Process(target=_finalize_in_child, args=(env, rec))
    child.start()
    try:
        assert vercel_blob_store.arrived.wait(120), "finalize never reached complete"
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(30)
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    if not completed_before_crash:
        vercel_blob_store.fail_next.append(503)  # the held complete is answered with an outage: nothing published
    vercel_blob_store.released.set()
    pathname = resources.provider.pathname(key)  # type: ignore[attr-defined]
    checkpoint = RedisCheckpoint(resources.redis, rec, key).load()
    assert checkpoint and {p["partNumber"] for p in checkpoint["parts"]} >= {1}  # part 1 went before the kill
    mark = len(mpu(vercel_blob_store))

    assert resources.finalizer.run(rec) == "completed"
    retried = since(vercel_blob_store, mark)
    if completed_before_crash:
        assert retried[0] == "complete:" and retried[1] == "create:" and retried[-1] == "complete:"
    else:
        assert retried == ["complete:"]  # every part was already there
    assert api.status(rec).get_json()["state"] == "completed"
    assert vercel_blob_store.blobs[pathname].data == live_file(resources, rec).read_bytes()
    assert RedisCheckpoint(resources.redis, rec, key).load() is None


def test_an_upload_vercel_no_longer_has_falls_back_to_a_whole_upload(vercel_live, big_recording, vercel_blob_store):
    api, resources, _ = vercel_live
    rec = record(api, resources, big_recording)
    assert "upload:2" in mpu(vercel_blob_store)
    vercel_blob_store.expire_uploads()  # its upload id is unknown now
    mark = len(mpu(vercel_blob_store))
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    retried = since(vercel_blob_store, mark)
    live = live_file(resources, rec)
    count = -(-live.stat().st_size // PART)
    whole = ["create:", *(f"upload:{n}" for n in range(1, count + 1)), "complete:"]
    assert retried[-len(whole):] == whole  # the SDK's own multipart, from part 1 in order
    output = api.status(rec).get_json()["outputs"][0]
    assert fetch(resources.provider, output["key"]) == live.read_bytes()
    assert RedisCheckpoint(resources.redis, rec, stored_key(api, rec)).load() is None


def test_other_part_size_or_other_key_is_not_adopted(vercel_live, big_recording, vercel_blob_store, tmp_path):
    """A checkpoint of parts of another size is not completed; a participant that goes to batch (another file at the
    same key) gets its own whole upload, never the parts sent ahead."""
    api, resources, _ = vercel_live
    rec = record(api, resources, big_recording)
    key = stored_key(api, rec)
    checkpoint = RedisCheckpoint(resources.redis, rec, key)
    state = checkpoint.load()
    assert state and state["ahead"]
    provider = resources.provider
    mark = len(mpu(vercel_blob_store))
    checkpoint.save({**state, "part_size": PART * 2})
    provider.upload_file(key, live_file(resources, rec), content_type="video/webm",  # type: ignore[union-attr]
                         metadata={"sha256-parts": "x"}, checkpoint=checkpoint)
    assert since(vercel_blob_store, mark)[0] == "create:"  # a new upload, not the one of other parts
    assert checkpoint.load() is None

    api = Api(api.client, api.app, f"room-{uuid.uuid4().hex[:10]}")  # the first room still records
    rec = record(api, resources, big_recording)
    assert RedisCheckpoint(resources.redis, rec, stored_key(api, rec)).load()
    resources.redis.delete(keys.live_state(rec))  # the live state is lost: batch makes the output
    mark = len(mpu(vercel_blob_store))
    assert api.stop().status_code == 202
    assert resources.finalizer.run(rec) == "completed"
    assert since(vercel_blob_store, mark)[0] == "create:"
    output = api.status(rec).get_json()["outputs"][0]
    downloaded = tmp_path / "stored.webm"
    downloaded.write_bytes(fetch(resources.provider, output["key"]))
    assert packets(downloaded) == batch_packets(resources, rec, tmp_path)


def test_beat_drops_the_checkpoint_of_an_abandoned_recording(vercel_live, big_recording, vercel_blob_store):
    """Vercel has no abort call: beat only forgets the upload; nothing was ever visible at the pathname."""
    api, resources, _ = vercel_live
    rec = record(api, resources, big_recording)
    key = stored_key(api, rec)
    assert RedisCheckpoint(resources.redis, rec, key).load()
    assert abort_checkpointed(resources.redis, resources.provider) == []  # still recording: left alone
    resources.store.finish(rec, State.FAILED, error="abandoned")
    assert key in abort_checkpointed(resources.redis, resources.provider)
    assert RedisCheckpoint(resources.redis, rec, key).load() is None
    assert resources.provider.pathname(key) not in vercel_blob_store.blobs  # type: ignore[attr-defined]
