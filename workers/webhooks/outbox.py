"""The per-recording outbox: every event kept with its attempts, last response code and next try."""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import redis

from workers import keys

PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"
MAX_SHOWN = 50
"""An outbox holds one delivery per event type, so far fewer; the bound keeps a status read constant-cost."""


@dataclass
class Delivery:
    """One event to POST; body is fixed at enqueue (a replay sends the same event), except its outputs' download
    links, which the sender mints when it sends."""
    id: str
    event: str
    body: str
    createdAt: float
    attempts: int = 0
    lastStatus: int | None = None
    nextAttemptAt: float = 0.0
    state: str = PENDING

    def public(self) -> dict:
        """What the status and the CLI show (no body)."""
        data = asdict(self)
        data.pop("body")
        return data


def enqueue_webhook(client: redis.Redis, recording_id: str, event: str, room: str, data: dict,
                    now: float) -> Delivery | None:
    """Append an event to the recording's outbox (once per event type: None if it is already there); the sender
    delivers it after every earlier one."""
    if not client.hsetnx(keys.webhook_events(recording_id), event, 1):
        return None
    occurred = datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z")
    body = json.dumps({"type": event, "recordingId": recording_id, "room": room, "occurredAt": occurred,
                       "data": data}, separators=(",", ":"))
    delivery = Delivery(id=uuid.uuid4().hex, event=event, body=body, createdAt=now, nextAttemptAt=now)
    client.rpush(keys.webhook_outbox(recording_id), json.dumps(asdict(delivery)))
    return delivery


def list_deliveries(client: redis.Redis, recording_id: str) -> list[Delivery]:
    """Every delivery of the recording, oldest first."""
    return [Delivery(**json.loads(raw)) for raw in client.lrange(keys.webhook_outbox(recording_id), 0, MAX_SHOWN - 1)]


def save(client: redis.Redis, recording_id: str, index: int, delivery: Delivery) -> None:
    """Write back one delivery's bookkeeping (only the one sender holding the lock writes)."""
    client.lset(keys.webhook_outbox(recording_id), index, json.dumps(asdict(delivery)))


def replay(client: redis.Redis, recording_id: str) -> int:
    """Mark every given-up delivery pending again (operator action); answers how many."""
    count = 0
    for index, delivery in enumerate(list_deliveries(client, recording_id)):
        if delivery.state == GIVEN_UP:
            delivery.state, delivery.attempts, delivery.nextAttemptAt = PENDING, 0, 0.0
            save(client, recording_id, index, delivery)
            count += 1
    return count
