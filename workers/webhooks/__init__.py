"""Signed webhooks with a per-recording outbox in Redis (plain Python; the Celery task is only a trigger)."""
from __future__ import annotations

from workers.webhooks.outbox import Delivery, enqueue_webhook, list_deliveries
from workers.webhooks.sender import deliver_due
from workers.webhooks.signing import sign, verify

__all__ = ["Delivery", "enqueue_webhook", "list_deliveries", "deliver_due", "sign", "verify"]
