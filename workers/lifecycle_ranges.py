"""Which sequences of a stream the server holds, as compact runs: what a reloaded client asks before re-uploading.

Read from the intake's running facts (min/max, runs of missing sequences, unreadable chunks), never from the
whole chunk index, and bounded: at most `limit` runs per answer, `next` says where the following page starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys

MAX_RANGES = 1000
"""The most runs one answer lists; a client pages on with ?after=<next>."""


@dataclass(frozen=True)
class HeldRanges:
    """One page of held runs plus the stream's totals."""

    ranges: list[list[int]]
    chunks: int
    bytes: int
    next: int | None

    def body(self) -> dict:
        return {"ranges": self.ranges, "chunks": self.chunks, "bytes": self.bytes, "next": self.next}


def _run(member: bytes) -> tuple[int, int]:
    first, _, last = member.decode().partition("-")
    return int(first), int(last or first)


def held_ranges(client: redis.Redis, recording_id: str, participant_id: str, stream_type: str, *,
                after: int = -1, limit: int = MAX_RANGES) -> HeldRanges:
    """Runs of held sequences above `after`, at most `limit`, in one round trip of bounded reads."""
    holes = keys.stream_holes(recording_id, participant_id, stream_type)
    unreadable = keys.stream_unreadable(recording_id, participant_id, stream_type)
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.stream_stats(recording_id, participant_id, stream_type), ("chunks", "bytes", "min", "max"))
    pipe.zrevrangebyscore(holes, after, "-inf", start=0, num=1)  # a run of missing sequences spanning `after`
    pipe.zrangebyscore(holes, f"({after}", "+inf", start=0, num=limit + 1)
    pipe.zrangebyscore(unreadable, f"({after}", "+inf", start=0, num=limit + 1)
    (chunks, size, low, high), before, later, bad = pipe.execute()
    total = (int(chunks or 0), int(size or 0))
    if low is None:
        return HeldRanges([], *total, None)
    lo, hi = max(int(low), after + 1), int(high)
    known = hi
    for fetched in (later, bad):  # a truncated list only vouches for what lies before its last member
        if len(fetched) > limit:
            known = min(known, _run(fetched[-1])[0] - 1)
    gaps = sorted(_run(m) for m in [*before, *later, *bad])
    runs = _runs(lo, known, gaps, limit)
    end = runs[-1][1] if runs else known
    more = end < hi
    return HeldRanges(runs, *total, end if more else None)


def _runs(lo: int, hi: int, gaps: list[tuple[int, int]], limit: int) -> list[list[int]]:
    """[lo, hi] minus the sorted gaps, as at most `limit` runs."""
    out: list[list[int]] = []
    cur = lo
    for first, last in gaps:
        if cur > hi or len(out) >= limit:
            return out
        if last < cur:
            continue
        if first > cur:
            out.append([cur, min(first - 1, hi)])
        cur = max(cur, last + 1)
    if cur <= hi and len(out) < limit:
        out.append([cur, hi])
    return out
