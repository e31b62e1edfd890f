"""Deliver a recording's outbox in order: one POST at a time, never a redirect, only the configured URL."""
from __future__ import annotations

import http.client
import json
import logging
import random
from typing import Callable
from urllib.parse import urlsplit

import redis

from workers import keys, metrics
from workers.webhooks.outbox import DELIVERED, GIVEN_UP, PENDING, Delivery, list_deliveries, save
from workers.webhooks.signing import sign

log = logging.getLogger(__name__)
FIRST_DELAY, MAX_DELAY = 10.0, 3600.0
UrlFor = Callable[[str], "str | None"]
LINKS = (("key", "url"), ("thumbnailKey", "thumbnailUrl"))
"""Each output's object key and the download link minted from it."""


def backoff(attempts: int) -> float:
    """Exponential with full jitter, capped at an hour: ~a day of tries fits in give_up_after."""
    return random.uniform(0.5, 1.0) * min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, attempts - 1))


def post(url: str, body: bytes, signature: str, timeout: float) -> int | None:
    """One POST; the status code, or None when the receiver could not be reached. Redirects are not followed."""
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                      "Tapedeck-Signature": signature})
        response = conn.getresponse()
        response.read(1024)  # the body is ignored; read a little so the connection closes cleanly
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def with_fresh_links(body: str, url_for: UrlFor | None) -> str:
    """The queued body with every output's download links minted now (DESIGN: URLs in webhooks are minted when
    sent), so a receiver that was down for hours, or a replay, gets links with their whole lifetime; a link the
    provider cannot mint now keeps the queued one. Bodies without outputs are sent as queued."""
    if url_for is None:
        return body
    event = json.loads(body)
    outputs = (event.get("data") or {}).get("outputs") if isinstance(event.get("data"), dict) else None
    if not isinstance(outputs, list) or not outputs:
        return body
    for output in outputs:
        for key_field, url_field in LINKS:
            key = output.get(key_field) if isinstance(output, dict) else None
            if key and url_field in output:
                output[url_field] = url_for(key) or output[url_field]
    return json.dumps(event, separators=(",", ":"))


def _attempt(d: Delivery, url: str, secret: str, now: float, timeout: float, give_up_after: float,
             url_for: UrlFor | None = None) -> None:
    """Try one delivery (its links minted now) and record the outcome on it."""
    body = with_fresh_links(d.body, url_for).encode()
    status = post(url, body, sign(secret, body, int(now)), timeout)
    d.attempts, d.lastStatus = d.attempts + 1, status
    if status is not None and 200 <= status < 300:
        d.state, outcome = DELIVERED, "delivered"
    elif now - d.createdAt >= give_up_after:
        d.state, outcome = GIVEN_UP, "failed"
    else:
        d.nextAttemptAt, outcome = now + backoff(d.attempts), "retry"
    metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
    log.info("webhook %s %s: %s (attempt %d, status %s)", d.event, d.id, outcome, d.attempts, status)


def deliver_due(client: redis.Redis, recording_id: str, url: str | None, secret: str, now: float, *,
                timeout: float = 10.0, give_up_after: float = 86400.0, url_for: UrlFor | None = None) -> float | None:
    """Deliver what is due, oldest first, stopping at the first that must wait; answers seconds until the next try
    (None: nothing left). No URL configured → nothing is sent and the outbox is left as it is. url_for mints an
    object key's download link at send time (the worker's storage provider)."""
    if not url:
        return None
    lock = keys.webhook_sender(recording_id)
    if not client.set(lock, "1", nx=True, ex=int(timeout) + 30):
        return FIRST_DELAY  # another sender holds this recording; try again later
    try:
        for index, d in enumerate(list_deliveries(client, recording_id)):
            if d.state != PENDING:
                continue
            if d.nextAttemptAt > now:
                return d.nextAttemptAt - now
            _attempt(d, url, secret, now, timeout, give_up_after, url_for)
            save(client, recording_id, index, d)
            if d.state == PENDING:
                return d.nextAttemptAt - now
        return None
    finally:
        client.delete(lock)
