"""A room's recordings, newest first, in bounded pages: the room index holds ids by start time, each page reads
at most a fixed number of recording hashes whatever the room's history or the state filter."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys
from workers.clock import epoch, iso

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
SCAN_FACTOR = 10
"""With a state filter a page reads at most limit × this many recordings; `next` continues where it stopped."""


@dataclass(frozen=True)
class ListingPage:
    recordings: list[dict]
    next: str | None

    def body(self) -> dict:
        return {"recordings": self.recordings, "next": self.next}


class CursorGone(Exception):
    """The cursor names a recording no longer listed (deleted meanwhile)."""


def _entry(recording_id: str, rec: dict[bytes, bytes]) -> dict:
    get = lambda name: rec.get(name.encode(), b"").decode() or None  # noqa: E731 - a local reader
    return {"recordingId": recording_id, "state": get("state"), "startedAt": iso(epoch(get("startedAt"))),
            "stoppedAt": iso(epoch(get("stoppedAt"))), "completedAt": iso(epoch(get("completedAt"))),
            "format": get("format")}


def list_recordings(client: redis.Redis, room: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                    state: str | None = None) -> ListingPage:
    """One page: up to `limit` recordings after `cursor` (a recording id from the previous page's next)."""
    index = keys.room_recordings(room)
    start = 0
    if cursor is not None:
        rank = client.zrevrank(index, cursor)
        if rank is None:
            raise CursorGone(cursor)
        start = rank + 1
    budget = limit if state is None else limit * SCAN_FACTOR
    ids = [m.decode() for m in client.zrevrange(index, start, start + budget - 1)]
    pipe = client.pipeline(transaction=False)
    for recording_id in ids:
        pipe.hgetall(keys.recording(recording_id))
    out: list[dict] = []
    last = None
    for recording_id, rec in zip(ids, pipe.execute()):
        last = recording_id
        if rec and (state is None or rec.get(b"state", b"").decode() == state):
            out.append(_entry(recording_id, rec))
            if len(out) == limit:
                break
    more = last is not None and client.zrevrank(index, last) not in (None, client.zcard(index) - 1)
    return ListingPage(out, last if more else None)
