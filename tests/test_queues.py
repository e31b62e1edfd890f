"""Separate queues on the real Redis broker: each task goes to its own queue, and exactly one copy of it."""
from __future__ import annotations

import redis
from celery import Celery

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
    url = stack_env["REDIS_URL"].rsplit("/", 1)[0] + "/12"  # a db no worker of the session consumes
    app = Celery("queue-check", set_as_current=False)  # else shared tasks would publish to db 12
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        for task in ROUTES:
            app.send_task(task, args=["rec_q"])
        app.send_task("tapedeck.something_unrouted")
        expected = {"finalize": 1, "webhooks": 1, "maintenance": 7, "celery": 1}
        assert {queue: client.llen(queue) for queue in expected} == expected
    finally:
        client.flushdb()
        client.close()
        app.close()
