"""Beat housekeeping against real Redis: auto-stop at the limits (paused time not counted) and recover_stalled
telling a finalize that waits behind a backlog from one whose worker died."""
from __future__ import annotations

import itertools
import time

import pytest

from tests.media import Recording, encode_webm, slice_timeslice
from tests.services import celery_on_private_db
from workers import keys
from workers.maintenance.autostop import idle_seconds, stop_over_limits
from workers.maintenance.recovery import stalled
from workers.pause import PauseControl
from workers.settings import Settings
from workers.state import RecordingStore, State

T0 = 1_800_000_000.0
_ids = itertools.count()


def _task_id() -> str:
    return f"task-{next(_ids)}"


def _start(store: RecordingStore, name: str, started: float, last_chunk: float | None = None) -> str:
    _, rid = store.start(f"room-{name}", f"rec_{name}", "webm", {}, now=started)
    if last_chunk is not None:
        store.redis.hset(keys.recording(rid), "lastChunkAt", repr(last_chunk))
    return rid


def test_limits_are_configurable_and_bounded():
    base = {"TAPEDECK_ENV": "development"}
    s = Settings.from_env(base)
    assert (s.max_recording_seconds, s.idle_stop_seconds) == (4 * 3600, 300)
    s = Settings.from_env({**base, "MAX_RECORDING_SECONDS": "0", "IDLE_STOP_SECONDS": "60"})
    assert (s.max_recording_seconds, s.idle_stop_seconds) == (0, 60)
    for name in ("MAX_RECORDING_SECONDS", "IDLE_STOP_SECONDS", "ORPHAN_UPLOAD_MIN_AGE_SECONDS"):
        with pytest.raises(Exception, match=name):
            Settings.from_env({**base, name: "-1"})
    with pytest.raises(Exception, match="REDIS_COMPACT_AFTER_SECONDS"):
        Settings.from_env({**base, "REDIS_COMPACT_AFTER_SECONDS": "59"})


def test_auto_stop_at_each_limit_paused_time_not_counted(private_redis):
    store, pauses = RecordingStore(private_redis), PauseControl(private_redis)
    now = T0 + 10_000
    too_long = _start(store, "long", now - 3700, last_chunk=now - 1)
    idle = _start(store, "idle", now - 1000, last_chunk=now - 400)
    busy = _start(store, "busy", now - 1000, last_chunk=now - 10)
    paused_idle = _start(store, "pausedidle", now - 7200, last_chunk=now - 7150)
    pauses.pause(paused_idle, now=now - 7100)  # 50 s idle before a pause that still lasts: not idle
    paused_long = _start(store, "pausedlong", now - 8000, last_chunk=now - 100)
    pauses.pause(paused_long, now=now - 100)  # 7900 s recorded before the pause: past the maximum
    silent = _start(store, "silent", now - 301)  # never sent a chunk: idle since its start
    ended = _start(store, "ended", now - 5000)
    private_redis.hset(keys.recording(ended), "state", State.COMPLETED.value)

    assert idle_seconds(store.get(paused_idle), now) == pytest.approx(50)
    assert stop_over_limits(private_redis, 0, 0, 5, _task_id, now) == []
    stopped = stop_over_limits(private_redis, 3600, 300, 5, _task_id, now)

    assert {(s.recording_id, s.reason) for s in stopped} == {
        (too_long, "max_duration"), (idle, "idle"), (paused_long, "max_duration"), (silent, "idle")}
    for item in stopped:
        rec = store.get(item.recording_id)
        assert (rec["state"], rec["stopReason"], rec["taskId"]) == ("finalizing", item.reason, item.task_id)
        assert private_redis.zscore(keys.pending_finalize(), item.recording_id) == pytest.approx(now + 5)
    assert store.get(paused_long)["pauses"].endswith(f":{now!r}")  # stop closed the open pause
    assert store.get(busy)["state"] == "recording" and store.get(paused_idle)["state"] == "paused"
    active = {m.decode() for m in private_redis.zrange(keys.active_recordings(), 0, -1)}
    assert active == {busy, paused_idle}  # the ended one left the set too
    assert stop_over_limits(private_redis, 3600, 300, 5, _task_id, now) == []  # idempotent


def test_host_stop_says_host_and_leaves_the_active_set(private_redis):
    store = RecordingStore(private_redis)
    rid = _start(store, "hoststop", T0)
    assert private_redis.zscore(keys.active_recordings(), rid) == T0
    store.stop("room-hoststop", 1, "t", now=T0 + 5)
    assert store.get(rid)["stopReason"] == "host"
    assert private_redis.zscore(keys.active_recordings(), rid) is None


def test_idle_recording_is_stopped_and_finalized_with_its_reason(api, rec, worker, app, stack_env, monkeypatch):
    from app.services import services
    from tasks import maintenance
    from tasks.runtime import runtime
    from workers.settings import get_settings

    for name, value in {**stack_env, "IDLE_STOP_SECONDS": "2"}.items():
        monkeypatch.setenv(name, value)
    runtime.cache_clear()
    get_settings.cache_clear()
    try:
        for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2.0)), 3)):
            assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
        with app.app_context():
            client = services().redis
        last_chunk = float(client.hget(keys.recording(rec), "lastChunkAt"))
        assert time.time() - 60 < last_chunk <= time.time()
        if time.time() - last_chunk < 1.5:
            assert maintenance.auto_stop.run(ids=[rec]) == []  # not idle long enough yet
        time.sleep(max(0.0, last_chunk + 2.1 - time.time()))
        assert maintenance.auto_stop.run(ids=[rec]) == [rec]
    finally:
        runtime.cache_clear()
        get_settings.cache_clear()
    body = api.wait_final(rec)
    assert (body["state"], body["stopReason"]) == ("completed", "idle"), body
    assert [o["participantId"] for o in body["outputs"]] == ["alice"]
    assert api.put_chunk(rec, "alice", "video", 9, b"\x01" * 8).status_code == 409  # stopped for good


@pytest.fixture
def private_celery(stack_env):
    """A Celery app on a database no worker consumes (not current: shared tasks keep the session's broker)."""
    with celery_on_private_db(stack_env, 10, "recovery-check") as (app, client):
        yield app, client


def test_recover_stalled_requeues_dead_and_lost_finalizes_never_waiting_ones(private_celery):
    from tasks.maintenance import _task_facts

    app, client = private_celery
    store = RecordingStore(client)
    ids = {}
    for name in ("queued", "died", "lost", "running"):
        _start(store, name, T0)
        ids[name] = store.stop(f"room-{name}", 0, f"old-{name}", now=T0 + 1)[0]
    app.send_task("tapedeck.finalize_recording", args=[ids["queued"]], task_id="old-queued")  # behind a backlog
    assert client.llen(keys.celery_queue("finalize")) == 1
    app.backend.store_result("old-died", None, "STARTED")  # a worker took it, then died (its lock expired)
    client.set(keys.finalize_lock(ids["running"]), "held", ex=60)
    store.finish(_start(store, "done", T0), State.COMPLETED)

    decisions = stalled(store, 30, lambda task_ids: _task_facts(app, client, task_ids), _task_id, now=T0 + 1000)

    assert {(d.recording_id, d.why) for d in decisions} == {
        (ids["died"], "its worker died"), (ids["lost"], "its task was lost")}
    for decision in decisions:
        assert store.get(decision.recording_id)["taskId"] == decision.task_id
    assert store.get(ids["queued"])["taskId"] == "old-queued" and store.get(ids["running"])["taskId"] == "old-running"
    assert stalled(store, 30, lambda task_ids: {}, _task_id, now=T0 + 20) == []  # within the quiet period


def test_recover_stalled_leaves_an_mp4_finalize_waiting_in_transcode(private_celery):
    from tasks.finalize import enqueue_finalize
    from tasks.maintenance import _task_facts

    app, client = private_celery
    store = RecordingStore(client)
    _, rid = store.start("room-mp4", "rec_mp4", "mp4", {}, now=T0)
    store.stop("room-mp4", 0, "old-mp4", now=T0 + 1)
    _, lost = store.start("room-mp4-lost", "rec_mp4_lost", "mp4", {}, now=T0)
    store.stop("room-mp4-lost", 0, "old-mp4-lost", now=T0 + 1)
    app.set_current()  # the shared finalize task publishes to the private broker
    try:
        enqueue_finalize(rid, "old-mp4", room="room-mp4", fmt="mp4")
    finally:
        from tasks import celery_app
        celery_app.set_current()
    assert client.llen(keys.celery_queue("transcode")) == 1 and client.llen(keys.celery_queue("finalize")) == 0

    decisions = stalled(store, 30, lambda task_ids: _task_facts(app, client, task_ids), _task_id, now=T0 + 1000)

    assert [(d.recording_id, d.fmt) for d in decisions] == [(lost, "mp4")]  # requeued to transcode, not finalize
    assert store.get(rid)["taskId"] == "old-mp4"


def test_operator_stops_a_paused_recording_from_the_cli(api, rec, app, worker):
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=1.0)), 2)):
        assert api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
    assert api.client.post(f"/video-calls/{api.room}/recording/pause", headers=api.auth()).status_code == 200
    runner = app.test_cli_runner()
    result = runner.invoke(args=["stop", rec])
    assert result.exit_code == 0 and f"stopped {rec}" in result.output, result.output
    again = runner.invoke(args=["stop", rec])
    assert again.exit_code != 0 and "only a recording or paused one" in again.output
    assert "no recording" in runner.invoke(args=["stop", "rec_nothing_here"]).output
    body = api.wait_final(rec)
    assert (body["state"], body["stopReason"]) == ("completed", "operator"), body
    assert body["pauses"][0]["resumedAt"] is not None  # the stop closed the pause


def test_every_beat_task_body_runs_against_the_real_redis(stack_env):
    """Wiring check of each scheduled task's body on the session's Redis (limits far from anything live)."""
    import celeryconfig
    from tasks import celery_app

    celery_app.loader.import_default_modules()  # the include list, as a worker imports it
    for entry in celeryconfig.beat_schedule.values():
        task = celery_app.tasks[entry["task"]]
        if entry["task"] == "tapedeck.recover_stalled":
            continue  # would requeue other tests' abandoned recordings; its parts run above on a private broker
        if entry["task"] == "tapedeck.auto_stop":
            assert task.run(ids=[]) == []
        else:
            assert isinstance(task.run(), list), entry["task"]
