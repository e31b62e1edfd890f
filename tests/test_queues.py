"""Separate queues on the real Redis broker: each task goes to its own queue, and exactly one copy of it; finalize
goes to `transcode` for MP4 output and to `finalize` otherwise."""
from __future__ import annotations

import json

import pytest

from tests.services import celery_on_private_db

ROUTES = {
    "tapedeck.finalize_recording": "finalize",
    "tapedeck.deliver_webhooks": "webhooks",
    "tapedeck.recover_stalled": "maintenance",
    "tapedeck.cleanup_staging": "maintenance",
    "tapedeck.purge_expired": "maintenance",
    "tapedeck.purge_recording": "maintenance",
    "tapedeck.auto_stop": "maintenance",
    "tapedeck.abort_orphaned_uploads": "maintenance",
    "tapedeck.compact_finished": "maintenance",
}


def test_each_task_lands_in_its_own_queue_once(stack_env):
    with celery_on_private_db(stack_env, 12, "queue-check") as (app, client):
        for task in ROUTES:
            app.send_task(task, args=["rec_q"])
        app.send_task("tapedeck.something_unrouted")
        expected = {"finalize": 1, "webhooks": 1, "maintenance": 7, "celery": 1}
        assert {queue: client.llen(queue) for queue in expected} == expected


@pytest.fixture
def private_app(stack_env):
    """A Celery app on a database no worker consumes, current while the test runs so the shared finalize task
    publishes through it (the session app is current again afterwards)."""
    from tasks import celery_app

    with celery_on_private_db(stack_env, 12, "queue-check") as (app, client):
        app.set_current()
        try:
            yield client
        finally:
            celery_app.set_current()


def _waiting_ids(client, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


@pytest.mark.parametrize("fmt, queue", [("mp4", "transcode"), ("webm", "finalize"), (None, "finalize")])
def test_finalize_goes_to_the_queue_of_its_output_format_once(private_app, fmt, queue):
    from tasks.finalize import enqueue_finalize

    enqueue_finalize("rec_q", f"task-{fmt}", room="room-q", fmt=fmt)

    assert _waiting_ids(private_app, queue) == [f"task-{fmt}"]
    others = {"celery", "finalize", "transcode", "webhooks", "maintenance", "live"} - {queue}
    assert {name: private_app.llen(name) for name in others} == dict.fromkeys(others, 0)


def test_a_worker_without_q_consumes_transcode(worker):
    """The session worker runs without -Q: its banner lists every declared queue, transcode included."""
    assert "-Q" not in worker.args
    banner = worker.log_path.read_text(errors="replace")
    assert ".> transcode" in banner and ".> finalize" in banner
