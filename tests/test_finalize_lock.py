"""A finalize that loses its lock (expired, or taken by a second run) stops before writing; the holder finishes once."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.media import Recording, encode_webm, probe, slice_timeslice


def _bounded_wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_refused_renewal_marks_the_lock_lost(app):
    from app.services import services
    from workers.errors import LockLost
    from workers.lock import heartbeat_lock

    with app.app_context():
        client = services().redis
    name = f"test-lock:{os.getpid()}:{time.monotonic_ns()}"
    with heartbeat_lock(client, name, 1) as held:
        assert held
        held.check()  # ours: no error
        client.set(name, "another-holder", ex=30)  # a second finalize took it after ours expired
        assert _bounded_wait(held.lost.is_set, 5), "the heartbeat never noticed the lock was taken"
        with pytest.raises(LockLost):
            held.check()
    assert client.get(name) == b"another-holder"  # ours did not release the other holder's lock
    client.delete(name)
    with heartbeat_lock(client, name, 30) as held:
        client.delete(name)  # expired while a stuck run was not beating
        with pytest.raises(LockLost):
            held.check()


def test_a_finalize_that_loses_its_lock_writes_nothing_and_the_holder_finishes_once(api, app, worker, stack_env):
    from app.services import services
    from tasks.finalize import enqueue_finalize
    from workers import keys
    from workers.errors import LockLost
    from workers.finalize import Finalizer
    from workers.lock import heartbeat_lock

    recording_id = api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 4)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    lock_name = keys.finalize_lock(recording_id)
    with app.app_context():
        svc = services()
        svc.store.stop(api.room, grace_seconds=0, task_id="manual")  # stopped, no task queued: we are the first run
        finalizer = Finalizer(store=svc.store, staging=svc.staging, provider=svc.provider, publisher=svc.events,
                              settings=svc.settings, sleep=lambda _s: None)

        def steal(_event: dict) -> None:
            svc.redis.set(lock_name, "second-finalize", ex=60)  # our lock expired mid-mux; another run holds it

        with heartbeat_lock(svc.redis, lock_name, 60) as held:
            with pytest.raises(LockLost):
                finalizer.run(recording_id, listener=steal, guard=held.check)
        assert svc.redis.get(lock_name) == b"second-finalize"

        body = api.status(recording_id).get_json()
        assert body["state"] not in ("completed", "failed") and body["outputs"] == []
        prefix = Path(os.environ["LOCAL_STORAGE_DIR"]) / "recordings" / api.room / recording_id
        assert not prefix.exists() or not any(prefix.iterdir()), "the run that lost its lock uploaded something"

        svc.redis.delete(lock_name)  # the second holder is done with it; the real task finishes the recording
        enqueue_finalize(recording_id, f"{recording_id}-second")
    body = api.wait_final(recording_id)
    assert body["state"] == "completed" and body["error"] is None
    assert [o["participantId"] for o in body["outputs"]] == ["alice"]
    assert probe(api.output_path(body, "alice")).frames["video"] > 0
