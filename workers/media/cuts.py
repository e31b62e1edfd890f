"""Paused spans cut out of a client that kept recording through a pause (docs/api.md, chunk rules).

A client that pauses its recorder leaves a jump in its chunk timestamps and no paused media; one that keeps
recording sends the paused media too, and it has to go. Which of the two a client did is read from its chunk
timestamps (client wall clock, epoch ms): across a pause they jump by about the pause when the client paused
itself, and step by one chunk's length when it did not. Where the paused media lies is the pause, moved onto
the client's clock by the estimated clock offset, measured from the segment's header chunk (a recorder's
media time runs with the wall clock from that chunk on). Pure: numbers in, cuts out; nothing here reads
Redis or knows what a recording is.
"""
from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

SELF_PAUSED_SHARE = 0.5
"""A client paused its own recorder when its timestamps jump across a pause by at least this share of the
pause (beyond one chunk's length): it then sent no paused media and nothing is cut."""

Span = tuple[float, float]
"""A paused span on the client's clock, (from, to) in epoch ms; `to` may be math.inf (never resumed)."""


@dataclass(frozen=True)
class Cut:
    """Media of one segment to leave out, in that segment's own container seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def chunk_interval_ms(stamps: Sequence[tuple[int, float]]) -> float:
    """One chunk's media length: the median step between timestamps of consecutive sequences (0 if unknown)."""
    steps = [b - a for (sa, a), (sb, b) in zip(stamps, stamps[1:]) if sb == sa + 1 and b > a]
    return statistics.median(steps) if steps else 0.0


def clock_offset_ms(skew_ms: float, interval_ms: float) -> float:
    """Server minus client clock: the least (arrival − timestamp) less one chunk's media, since a chunk is sent
    only once its media has been recorded (what is left over is the least network delay)."""
    return skew_ms - interval_ms


def client_spans(pauses: Sequence[tuple[float, float | None]], offset_ms: float) -> list[Span]:
    """Server pauses (epoch seconds, end None while open) moved onto the client's clock."""
    return [(start * 1000.0 - offset_ms, math.inf if end is None else end * 1000.0 - offset_ms)
            for start, end in pauses if end is None or end > start]


def segment_cuts(spans: Sequence[Span], stamps: Sequence[tuple[int, float]], interval_ms: float,
                 start_seconds: float = 0.0) -> list[Cut]:
    """Cuts for one segment (one recorder run) given its chunks' (sequence, timestamp ms), header chunk
    first; none when the header chunk has no timestamp or the client paused its recorder itself."""
    if not stamps:
        return []
    anchor = stamps[0][1]
    times = sorted(ts for _, ts in stamps)
    cuts = []
    for start, end in sorted(spans):
        begin = max(start, anchor)
        if end <= begin or not _kept_recording(times, begin, end, interval_ms):
            continue
        cuts.append(Cut(start_seconds + (begin - anchor) / 1000.0,
                        math.inf if math.isinf(end) else start_seconds + (end - anchor) / 1000.0))
    return _merged(cuts)


def _kept_recording(times: list[float], begin: float, end: float, interval_ms: float) -> bool:
    """True when the chunk timestamps step across the span as if nothing paused; False when they jump over
    it, or when no chunk began after it started (no evidence: real media is never cut on a guess)."""
    at = bisect.bisect_left(times, begin)
    if at >= len(times):
        return False
    before = times[at - 1] if at > 0 else None
    if before is None:
        if times[at] != begin:  # the segment's own first chunk is the only thing at or before the span
            return False
        if at + 1 >= len(times):
            return False
        before, at = times[at], at + 1
    jump = times[at] - before - interval_ms
    span = (end if math.isfinite(end) else times[-1] + interval_ms) - begin
    return jump < SELF_PAUSED_SHARE * span


def _merged(cuts: list[Cut]) -> list[Cut]:
    out: list[Cut] = []
    for cut in sorted(cuts, key=lambda c: c.start):
        if out and cut.start <= out[-1].end:
            out[-1] = Cut(out[-1].start, max(out[-1].end, cut.end))
        else:
            out.append(cut)
    return out


class CutFilter:
    """Applies one segment's cuts packet by packet: media inside a cut is left out and media after it moves
    back by the cut's length (every track alike, so lip-sync holds). Video frames between a cut and the next
    keyframe refer to pictures that were cut: waiting() tells the caller to bridge or drop them."""

    def __init__(self, cuts: Sequence[Cut]) -> None:
        self.cuts = list(cuts)
        self._starts = [c.start for c in self.cuts]
        self._before: list[float] = [0.0]
        for cut in self.cuts:
            self._before.append(self._before[-1] + cut.seconds)
        self._waiting: set[int] = set()
        self.dropped = 0
        """Packets left out: inside a cut, or (counted by the caller) video after one that cannot be bridged."""
        self.removed_seconds = 0.0
        """How far the latest media kept was moved back: the paused time taken out so far."""

    def waiting(self, track: int) -> bool:
        """True for a video track past a cut and not yet at a keyframe: its frames refer to cut pictures, so
        they must be bridged (workers/media/bridge.py) or left out."""
        return track in self._waiting

    def shift(self, track: int, seconds: float, video: bool, keyframe: bool) -> float | None:
        """Seconds to move a packet at `seconds` (segment time) back by, or None to leave it out."""
        at = bisect.bisect_right(self._starts, seconds)
        if at and seconds < self.cuts[at - 1].end:
            if video:
                self._waiting.add(track)
            self.dropped += 1
            return None
        if track in self._waiting and keyframe:
            self._waiting.discard(track)
        shift = self._before[at]
        self.removed_seconds = max(self.removed_seconds, shift)
        return shift


@dataclass(frozen=True)
class StreamCuts:
    """What one stream needs to cut its segments: the paused spans on its client's clock and its chunks'
    timestamps (sequence → epoch ms)."""

    spans: tuple[Span, ...]
    stamps: dict[int, float]
    interval_ms: float

    def for_segment(self, sequences: Sequence[int], start_seconds: float) -> CutFilter | None:
        """The filter for the segment made of these chunks (header first); None when nothing is cut."""
        if not self.spans or not sequences or sequences[0] not in self.stamps:
            return None
        stamps = [(s, self.stamps[s]) for s in sequences if s in self.stamps]
        cuts = segment_cuts(self.spans, stamps, self.interval_ms, start_seconds)
        return CutFilter(cuts) if cuts else None
