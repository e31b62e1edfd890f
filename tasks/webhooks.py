"""Thin webhook task on its own `webhooks` queue: deliver a recording's outbox, come back when the next try is due."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from tasks.labels import argsrepr
from tasks.runtime import runtime
from workers.resources import Resources
from workers.status import build_status
from workers.webhooks import deliver_due
from workers.webhooks import enqueue_webhook as _append

QUEUE = "webhooks"
log = logging.getLogger(__name__)


@shared_task(name="tapedeck.deliver_webhooks", acks_late=True)
def deliver_webhooks(recording_id: str) -> float | None:
    """Send what is due in order; schedule itself again for the first delivery that must wait."""
    rt = runtime()
    s = rt.settings
    wait = deliver_due(rt.redis, recording_id, s.webhook_url, s.webhook_secret, time.time(),
                       timeout=s.webhook_timeout_seconds, give_up_after=s.webhook_give_up_seconds,
                       url_for=rt.download_url)
    if wait is not None:
        deliver_webhooks.apply_async(args=[recording_id], countdown=max(1.0, wait))
    return wait


def enqueue_webhook(recording_id: str, event: str, room: str, data: dict, resources: Resources | None = None) -> None:
    """Record the event in the outbox and wake the sender (nothing is kept or sent without WEBHOOK_URL); pass the
    caller's resources where it has them (the web process) so no new connections are built."""
    rt = resources or runtime()
    if not rt.settings.webhook_url:
        return
    if _append(rt.redis, recording_id, event, room, data, time.time()) is not None:
        deliver_webhooks.apply_async(args=[recording_id], argsrepr=argsrepr(recording_id, room))


def send_final_state(recording_id: str) -> None:
    """recording.completed (data = the status body; its download URLs are minted again each time it is sent) or
    recording.failed, once each;
    a webhook problem is logged and never fails the finalize that called it."""
    try:
        rt = runtime()
        body = build_status(rt.store, recording_id, url_for=rt.download_url)
        if body and body["state"] in ("completed", "failed"):
            enqueue_webhook(recording_id, f"recording.{body['state']}", body["room"], body)
    except Exception:  # noqa: BLE001 - the recording's outcome stands whatever the webhook does
        log.exception("could not queue the final-state webhook of %s", recording_id)
