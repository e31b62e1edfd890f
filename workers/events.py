"""Progress events: one write to the status hash, a capped Redis Stream (resumable) and a pub/sub channel (live)."""
from __future__ import annotations

import json
import time
from typing import Callable

import redis

from workers import keys

Listener = Callable[[dict], None]


class EventPublisher:
    """Publishes a recording's state/progress changes to every place a client may watch."""

    def __init__(self, client: redis.Redis, maxlen: int = 1000) -> None:
        self.redis = client
        self.maxlen = maxlen

    def publish(self, recording_id: str, event: dict) -> str:
        """Append to the stream, then announce on the channel with the stream id (for Last-Event-ID)."""
        body = {"recordingId": recording_id, "at": time.time(), **event}
        event_id = self.redis.xadd(
            keys.events(recording_id), {"data": json.dumps(body)}, maxlen=self.maxlen, approximate=True
        )
        event_id = event_id.decode() if isinstance(event_id, bytes) else event_id
        self.redis.publish(keys.events_channel(recording_id), json.dumps({"id": event_id, **body}))
        return event_id

    def read(self, recording_id: str, after: str = "0-0", block_ms: int | None = None) -> list[tuple[str, dict]]:
        """Events after a stream id, oldest first; waits up to block_ms for the first one when none is there."""
        reply = self.redis.xread({keys.events(recording_id): after}, count=500, block=block_ms)
        out = []
        for _stream, entries in reply or []:
            for event_id, fields in entries:
                out.append((event_id.decode(), json.loads(fields[b"data"])))
        return out


class ProgressReporter:
    """Turns stage fractions into overall progress, written at most every 1% (plus every stage change)."""

    STAGES = {"finalizing": (0.0, 0.0), "muxing": (0.0, 0.6), "uploading": (0.6, 1.0)}
    """Where each stage sits in overall progress; muxing is stream copy, uploading moves the bytes."""

    STATUS_FIELDS = ("bytesSent", "bytesTotal")
    """Detail worth keeping in the status hash (not only in events): the upload's byte counters."""

    def __init__(self, store_update: Callable[..., None], publisher: EventPublisher, recording_id: str,
                 listener: Listener | None = None) -> None:
        self._update = store_update
        self._publisher = publisher
        self._recording_id = recording_id
        self._listener = listener
        self._last: tuple[str, float] = ("", -1.0)

    def report(self, stage: str, fraction: float, **detail: object) -> None:
        low, high = self.STAGES.get(stage, (0.0, 1.0))
        overall = round(low + (high - low) * max(0.0, min(1.0, fraction)), 4)
        last_stage, last_value = self._last
        if stage == last_stage and overall - last_value < 0.01 and fraction < 1.0:
            return
        self._last = (stage, overall)
        counters = {k: v for k, v in detail.items() if k in self.STATUS_FIELDS}
        self._update(self._recording_id, state=stage, progress=overall, **counters)
        event = {"type": "progress", "state": stage, "progress": overall, **detail}
        self._publisher.publish(self._recording_id, event)
        if self._listener:
            self._listener(event)

    def state(self, state: str, **detail: object) -> None:
        """A state change that is not progress (completed, failed): always published."""
        event = {"type": "state", "state": state, **detail}
        self._publisher.publish(self._recording_id, event)
        if self._listener:
            self._listener(event)
