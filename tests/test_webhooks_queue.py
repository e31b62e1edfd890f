"""Queue routing on the real Redis broker: each message lands in exactly one queue (kombu copies on shared bindings)."""
from __future__ import annotations

import redis
from celery import Celery


def test_finalize_and_webhook_messages_each_land_in_one_queue(stack_env):
    url = stack_env["REDIS_URL"].rsplit("/", 1)[0] + "/13"  # a db no worker of the session consumes
    app = Celery("routing-check", set_as_current=False)  # shared tasks of the session keep the real app
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        app.send_task("tapedeck.finalize", args=["rec_q1"])
        app.send_task("tapedeck.deliver_webhooks", args=["rec_q1"])
        app.send_task("tapedeck.deliver_webhooks", args=["rec_q2"])
        lists = {key.decode(): client.llen(key) for key in client.scan_iter() if client.type(key) == b"list"}
        assert lists.pop("webhooks") == 2
        assert list(lists.values()) == [1]  # the finalize, in exactly one (non-webhook) queue
    finally:
        client.flushdb()
        client.close()
        app.close()
