"""Which stopped recordings need their finalize queued again: those whose worker died, never those only waiting.

Under a backlog a finalize can sit in its queue for longer than any quiet period, with no lock held; queueing
another copy then only lengthens the backlog. So a recording is requeued only when its task is provably not
going to run: it started (the result backend says so) but no worker holds its lock any more, or it is neither
in a queue nor held by a live worker (lost with its broker message). The Celery layer supplies those facts.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from workers import keys
from workers.lock import is_locked
from workers.state import FINAL_STATES, RecordingStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskFacts:
    """What the broker and the workers say about one finalize task id."""

    started: bool
    """A worker began it (the result backend has more than PENDING/RETRY): not waiting, so that worker died."""
    waiting: bool
    """Its message waits in a queue, or a live worker holds it (reserved, scheduled for its grace, running)."""


FactsFor = Callable[[list[str]], dict[str, TaskFacts]]


@dataclass(frozen=True)
class Requeue:
    recording_id: str
    room: str
    task_id: str
    why: str
    fmt: str | None = None
    """The output format, which picks the queue the finalize is sent to."""


def stalled(store: RecordingStore, quiet_for: float, facts_for: FactsFor, new_task_id: Callable[[], str],
            now: float | None = None) -> list[Requeue]:
    """Requeue decisions for stopped recordings past their grace; stores each new task id on its recording."""
    now = time.time() if now is None else now
    candidates: dict[str, str] = {}
    rooms: dict[str, str] = {}
    formats: dict[str, str | None] = {}
    for recording_id in store.pending(older_than=now):
        rec = store.get(recording_id)
        if rec is None or rec["state"] in FINAL_STATES:
            store.redis.zrem(keys.pending_finalize(), recording_id)
            continue
        if is_locked(store.redis, keys.finalize_lock(recording_id)):
            continue  # running: its heartbeat keeps the lock
        last_touch = max(float(rec.get("updatedAt") or 0), float(rec.get("acceptUntil") or 0))
        if now - last_touch < quiet_for:
            continue  # just stopped, or its worker only now let go
        candidates[recording_id] = rec.get("taskId") or ""
        rooms[recording_id] = rec.get("room", "")
        formats[recording_id] = rec.get("format")
    if not candidates:
        return []
    known = facts_for([t for t in candidates.values() if t])
    decisions = []
    for recording_id, task_id in candidates.items():
        fact = known.get(task_id, TaskFacts(started=False, waiting=False))
        if fact.waiting:
            log.info("finalize of %s waits in a queue or a live worker; not requeued", recording_id,
                     extra={"event": "finalize_waiting", "recordingId": recording_id, "taskId": task_id})
            continue
        why = "its worker died" if fact.started else "its task was lost"
        new_id = new_task_id()
        store.update(recording_id, taskId=new_id)
        log.warning("requeued stalled finalize of %s as %s (%s)", recording_id, new_id, why,
                    extra={"event": "finalize_requeued", "recordingId": recording_id, "taskId": new_id})
        decisions.append(Requeue(recording_id, rooms[recording_id], new_id, why, formats[recording_id]))
    return decisions
