"""tapedeck.live_step and its scheduling: one queued step per LIVE_STEP_SECONDS per recording, steps only while
the room records (finalize folds the tail itself)."""
from __future__ import annotations

import time
import uuid

import pytest

import tasks.live
from tests.media import Recording, encode_webm, slice_timeslice
from tests.test_live_flow import live_api, live_env, resources  # noqa: F401 - the module's own Redis and app
from workers import keys
from workers.live.consumers import LiveConsumers


@pytest.fixture
def queued(monkeypatch, resources):  # noqa: F811
    """Steps intake queues, caught before the broker; a worker consuming `live` is announced, as intake requires."""
    LiveConsumers(resources.redis).announce("test-live-worker", 600)
    sent = []
    monkeypatch.setattr(tasks.live.live_step, "apply_async", lambda args, countdown: sent.append((args, countdown)))
    monkeypatch.setattr(tasks.live, "runtime", lambda: resources)
    return sent


def test_chunks_queue_one_step_per_period(live_api, resources, queued):  # noqa: F811
    rec = live_api.start().get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(encode_webm(Recording(seconds=2)), 4)):
        assert live_api.put_chunk(rec, "alice", "video", sequence, piece).status_code == 202
    assert queued == [([rec], 1.0)]  # LIVE_STEP_SECONDS=1 in this module's environment
    assert 0 < resources.redis.pttl(keys.live_due(rec)) <= 1000


def test_the_task_steps_while_recording_and_not_after_stop(live_api, resources, queued):  # noqa: F811
    rec = live_api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=6)), 12)
    for sequence, piece in enumerate(pieces[:10]):
        live_api.put_chunk(rec, "alice", "video", sequence, piece)
    tasks.live.live_step.run(rec)
    folded = resources.finalizer.live.states.get(rec, "alice")
    assert folded.windows == 1
    for sequence, piece in enumerate(pieces[10:], 10):
        live_api.put_chunk(rec, "alice", "video", sequence, piece)
    assert live_api.stop().status_code == 202
    tasks.live.live_step.run(rec)  # a step queued before stop arrives after it: finalize's work now
    assert resources.finalizer.live.states.get(rec, "alice").windows == 1


def test_a_process_asks_redis_once_per_period_not_per_chunk(live_api, resources, queued):  # noqa: F811
    """The period a process saw is remembered: with the due key gone behind its back, the rest of the period's
    chunks still queue nothing (no script ran for them); the next period queues again."""
    rec = live_api.start().get_json()["recordingId"]
    pieces = slice_timeslice(encode_webm(Recording(seconds=4)), 8)
    assert live_api.put_chunk(rec, "alice", "video", 0, pieces[0]).status_code == 202
    resources.redis.delete(keys.live_due(rec))
    assert live_api.put_chunk(rec, "alice", "video", 1, pieces[1]).status_code == 202
    assert queued == [([rec], 1.0)]
    assert not resources.redis.exists(keys.live_due(rec))  # the second chunk made no call
    time.sleep(1.1)  # LIVE_STEP_SECONDS=1: the next period
    assert live_api.put_chunk(rec, "alice", "video", 2, pieces[2]).status_code == 202
    assert queued == [([rec], 1.0), ([rec], 1.0)]


def test_a_period_another_process_began_is_waited_out(live_api, resources, queued):  # noqa: F811
    """Another web process began the period: this one queues nothing until that period's due key lapses."""
    pieces = slice_timeslice(encode_webm(Recording(seconds=4)), 8)  # before the key is set: encoding takes time
    rec = live_api.start().get_json()["recordingId"]
    resources.redis.set(keys.live_due(rec), b"1", px=2000)  # long enough for the first PUT on a loaded box
    assert live_api.put_chunk(rec, "alice", "video", 0, pieces[0]).status_code == 202
    assert queued == []
    time.sleep(max(0.0, resources.redis.pttl(keys.live_due(rec)) / 1000) + 0.1)
    assert live_api.put_chunk(rec, "alice", "video", 1, pieces[1]).status_code == 202
    assert queued == [([rec], 1.0)]


def test_a_transcoded_recording_steps_on_its_own_period(live_env, resources, queued):  # noqa: F811
    """`format: mp4` steps every LIVE_TRANSCODE_STEP_SECONDS (what is not folded at stop is transcoded after it), a
    WebM recording every LIVE_STEP_SECONDS; the step's countdown and the due key's lifetime follow the period."""
    from app import create_app
    from tests.conftest import Api

    app = create_app({**live_env, "LIVE_STEP_SECONDS": "20", "LIVE_TRANSCODE_STEP_SECONDS": "6"})  # slow boxes too
    api = Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")
    other = Api(app.test_client(), app, f"room-{uuid.uuid4().hex[:10]}")
    piece = slice_timeslice(encode_webm(Recording(seconds=1)), 2)[0]
    mp4 = api.start(format="mp4").get_json()["recordingId"]
    webm = other.start(format="webm").get_json()["recordingId"]
    for sequence in range(2):
        assert api.put_chunk(mp4, "alice", "video", sequence, piece).status_code == 202
        assert other.put_chunk(webm, "alice", "video", sequence, piece).status_code == 202
    assert queued == [([mp4], 6.0), ([webm], 20.0)]
    assert 0 < resources.redis.pttl(keys.live_due(mp4)) <= 6000 < resources.redis.pttl(keys.live_due(webm)) <= 20000
